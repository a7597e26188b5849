"""Lane occupancy and batched leader search.

A vehicle occupies every lane that its body's bounding box overlaps laterally, so a car straddling
two lanes is a leader candidate in both. The leader of vehicle ``i`` is the nearest vehicle ahead
of it in any lane they share, ordered by ``(x, index)``: among vehicles at exactly the same ``x``
the one with the larger index is ahead. On a ring road everyone else in a shared lane is ahead
(at ring distance ``(x_j - x_i) mod L``); a vehicle alone in its lanes has no leader (it is never
its own leader). Leader membership is discrete: it carries no gradient.

Two exact algorithms give identical results:

* ``pairwise``: an ``[B, N, N]`` distance matrix; fastest for small ``N``.
* ``sorted``: vehicles sorted by ``x`` once, then per lane the next occupant in that order, found
  with a reverse cumulative minimum; ``O(B N L)`` memory, for thousands of vehicles per world.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from difftraffic.road import Road
from difftraffic.state import TrafficState, body_extents

LeaderMethod = Literal["auto", "pairwise", "sorted"]

PAIRWISE_MAX_VEHICLES = 24
"""``method="auto"`` uses the pairwise search up to this many vehicle slots per world."""


class Neighbors(NamedTuple):
    """Leader relations of one state.

    Attributes:
        leader: ``[B, N]`` long, index of each vehicle's leader (its own index when it has none).
        has_leader: ``[B, N]`` bool.
    """

    leader: Tensor
    has_leader: Tensor


def lane_occupancy(state: TrafficState, road: Road) -> Tensor:
    """``[B, N, L]`` bool: lanes each active vehicle's body overlaps; all False for inactive slots."""
    _, _, low_y, high_y = body_extents(state)
    occupancy = road.occupied_lanes(low_y.detach(), high_y.detach())
    return occupancy & state.active.unsqueeze(-1)


def find_leaders(
    x: Tensor,
    occupancy: Tensor,
    ring_length: float | None = None,
    method: LeaderMethod = "auto",
) -> Neighbors:
    """Leader of every vehicle.

    Args:
        x: ``[B, N]`` front-bumper positions (m); only their order matters.
        occupancy: ``[B, N, L]`` bool lane occupancy (see :func:`lane_occupancy`).
        ring_length: ring circumference (m), or ``None`` for a straight road.
        method: ``"pairwise"``, ``"sorted"`` or ``"auto"`` (pairwise for at most
            :data:`PAIRWISE_MAX_VEHICLES` slots).
    """
    x = x.detach()
    if ring_length is not None:
        x = torch.remainder(x, ring_length)
    if method == "auto":
        method = "pairwise" if x.shape[1] <= PAIRWISE_MAX_VEHICLES else "sorted"
    if method == "pairwise":
        return _leaders_pairwise(x, occupancy, ring_length)
    if method == "sorted":
        return _leaders_sorted(x, occupancy, ring_length)
    raise ValueError(f"method must be 'auto', 'pairwise' or 'sorted', got {method!r}")


def _leaders_pairwise(x: Tensor, occupancy: Tensor, ring_length: float | None) -> Neighbors:
    n = x.shape[1]
    index = torch.arange(n, device=x.device)
    occ = occupancy.to(x.dtype)
    shares_lane = torch.matmul(occ, occ.transpose(1, 2)) > 0
    distance = x.unsqueeze(1) - x.unsqueeze(2)  # [b, i, j] = x_j - x_i
    j_after_i = index.unsqueeze(0) > index.unsqueeze(1)
    if ring_length is None:
        ahead = (distance > 0) | ((distance == 0) & j_after_i)
    else:
        distance = torch.remainder(distance, ring_length)
        distance = torch.where((distance == 0) & ~j_after_i, ring_length, distance)
        ahead = index.unsqueeze(0) != index.unsqueeze(1)
    candidate = torch.where(shares_lane & ahead, distance, torch.inf)
    best, leader = candidate.min(dim=-1)
    has_leader = torch.isfinite(best)
    leader = torch.where(has_leader, leader, index)
    return Neighbors(leader, has_leader)


def _leaders_sorted(x: Tensor, occupancy: Tensor, ring_length: float | None) -> Neighbors:
    batch, n, lanes = occupancy.shape
    order = torch.argsort(x, dim=1, stable=True)
    x_sorted = x.gather(1, order)
    occ_by_rank = occupancy.gather(1, order.unsqueeze(-1).expand(batch, n, lanes)).transpose(1, 2)
    rank = torch.arange(n, device=x.device)
    occupied_rank = torch.where(occ_by_rank, rank, n)  # [B, L, N]
    first_at_or_after = occupied_rank.flip(-1).cummin(-1).values.flip(-1)
    next_rank = torch.cat([first_at_or_after[..., 1:], torch.full_like(first_at_or_after[..., :1], n)], -1)
    if ring_length is not None:
        first_in_lane = occupied_rank.min(dim=-1, keepdim=True).values
        next_rank = torch.where(next_rank == n, first_in_lane.expand_as(next_rank), next_rank)
        next_rank = torch.where(next_rank == rank, n, next_rank)
    valid = occ_by_rank & (next_rank < n)
    safe_next = next_rank.clamp(max=n - 1)
    x_next = x_sorted.unsqueeze(1).expand(batch, lanes, n).gather(2, safe_next)
    distance = x_next - x_sorted.unsqueeze(1)
    if ring_length is not None:
        distance = torch.where(safe_next <= rank, distance + ring_length, distance)
    distance = torch.where(valid, distance, torch.inf)
    leader_of_rank = order.unsqueeze(1).expand(batch, lanes, n).gather(2, safe_next)
    best = distance.min(dim=1, keepdim=True).values
    # Across lanes, equal distances go to the lower vehicle index, as in the pairwise search.
    tied_leader = torch.where(distance == best, leader_of_rank, n)
    leader_by_rank = tied_leader.min(dim=1).values
    has_leader_by_rank = torch.isfinite(best.squeeze(1))
    leader = torch.empty_like(order).scatter_(1, order, leader_by_rank)
    has_leader = torch.empty_like(has_leader_by_rank).scatter_(1, order, has_leader_by_rank)
    own_index = rank.expand(batch, n)
    return Neighbors(torch.where(has_leader, leader, own_index), has_leader)


def compute_neighbors(state: TrafficState, road: Road, method: LeaderMethod = "auto") -> Neighbors:
    """Leaders of every active vehicle in ``state`` (see :func:`find_leaders`)."""
    return find_leaders(state.x, lane_occupancy(state, road), road.ring_length, method)


def leader_distance(state: TrafficState, neighbors: Neighbors, road: Road) -> Tensor:
    """``[B, N]`` distance (m) from each vehicle's front bumper to its leader's, along the road.

    Differentiable in ``x``; on a ring it is taken modulo the circumference.
    """
    x_lead = state.x.gather(1, neighbors.leader)
    distance = x_lead - state.x
    if road.ring_length is not None:
        distance = torch.remainder(distance, road.ring_length)
        own_index = torch.arange(state.num_vehicles, device=state.x.device)
        tie_behind = (distance == 0) & (neighbors.leader < own_index)
        distance = torch.where(tie_behind, distance + road.ring_length, distance)
    return distance


def leader_gap_and_speed(
    state: TrafficState, neighbors: Neighbors, road: Road
) -> tuple[Tensor, Tensor]:
    """Bumper-to-bumper gap (m) to the leader and the leader's speed along the road (m/s).

    Returns:
        ``(gap, v_lead)``, each ``[B, N]``; meaningless (but finite) where there is no leader.
        For vehicles aligned with the road, ``gap = x_lead - length_lead - x``.
    """
    rear_x, front_x, _, _ = body_extents(state)
    lead = neighbors.leader
    rear_overhang_lead = rear_x.gather(1, lead) - state.x.gather(1, lead)
    gap = leader_distance(state, neighbors, road) + rear_overhang_lead - (front_x - state.x)
    v_along_road = state.v * torch.cos(state.heading)
    return gap, v_along_road.gather(1, lead)


def detect_collisions(state: TrafficState, neighbors: Neighbors, road: Road) -> Tensor:
    """``[B, N]`` bool: vehicles whose bounding box overlaps their leader's (both are marked)."""
    gap, _ = leader_gap_and_speed(state, neighbors, road)
    _, _, low_y, high_y = body_extents(state)
    lead = neighbors.leader
    lateral_overlap = (low_y < high_y.gather(1, lead)) & (high_y > low_y.gather(1, lead))
    hit = neighbors.has_leader & (gap.detach() < 0) & lateral_overlap
    hit_count = torch.zeros(hit.shape, dtype=torch.int32, device=hit.device)
    hit_count = hit_count.scatter_add(1, lead, hit.to(torch.int32))
    return hit | (hit_count > 0)
