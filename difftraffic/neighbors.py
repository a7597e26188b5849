"""Lane occupancy and batched leader search.

A vehicle occupies the lanes that ``Road.lane_membership`` assigns it: under ``"body"`` (the
default) every lane that its body's bounding box overlaps laterally, so a car straddling two lanes
is a leader candidate in both; under ``"center"`` (the GI-PPO authors' rule) only the lane whose
centre is nearest to it (see :meth:`difftraffic.road.Road.member_lanes`). The leader of vehicle
``i`` is the nearest vehicle ahead of it in any lane they share, ordered by ``(x, index)``: among
vehicles at exactly the same ``x`` the one with the larger index is ahead. On a ring road everyone
else in a shared lane is ahead (at ring distance ``(x_j - x_i) mod L``); a vehicle alone in its
lanes has no leader (it is never its own leader). Leader membership is discrete: it carries no
gradient.

Two exact algorithms give identical results:

* ``pairwise``: vehicles ranked by ``(x, index)``, then an ``[B, N, N]`` table of which ranks share
  a lane; the leader is the first sharing rank after one's own (cyclically on a ring). Fastest for
  small ``N``.
* ``sorted``: vehicles sorted by ``x`` once, then per lane the next occupant in that order, found
  with a reverse cumulative minimum; ``O(B N L)`` memory, for thousands of vehicles per world.

Everything here is free of data-dependent Python branches and host synchronisation, so that
:func:`difftraffic.dynamics.step` compiles to one graph.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from difftraffic.road import Road
from difftraffic.state import BodyBox, TrafficState, longitudinal_extent

LeaderMethod = Literal["auto", "pairwise", "sorted"]

PAIRWISE_MAX_VEHICLES = 64
"""``method="auto"`` never uses the pairwise search beyond this many vehicle slots per world."""

PAIRWISE_MAX_VEHICLES_PER_LANE = 12
"""``method="auto"``: above this many slots per lane the sorted search wins on large batches."""

PAIRWISE_MAX_TABLE = 1 << 22
"""``method="auto"``: largest ``B N^2`` pairwise table; beyond it memory traffic dominates."""

PAIRWISE_SMALL_BATCH = 1024
"""``method="auto"``: up to this many slots in all (``B N``) per-operation overhead dominates, and
the pairwise search, with fewer operations, wins."""

_MAX_BITMASK_LANES = 31
"""Up to this many lanes, lane sets are packed into one int32 per vehicle (int32 rather than int64:
AVX2 vectorises 32-bit integer arithmetic only)."""


class Neighbors(NamedTuple):
    """Leader relations of one state.

    Attributes:
        leader: ``[B, N]`` long, index of each vehicle's leader (its own index when it has none).
        has_leader: ``[B, N]`` bool.
        order: ``[B, N]`` long, each world's vehicles sorted by ``(x, index)``, kept by the
            fused step (:mod:`difftraffic.fused`) to start its next search from; ``None`` from
            the eager searches.
    """

    leader: Tensor
    has_leader: Tensor
    order: Tensor | None = None


def box_occupancy(box: BodyBox, active: Tensor, road: Road) -> Tensor:
    """``[B, N, L]`` bool lanes that bodies ``box`` belong to under ``road.lane_membership``;
    all False where ``active`` is not."""
    occupancy = road.member_lanes(box.low_y.detach(), box.high_y.detach())
    return occupancy & active.unsqueeze(-1)


def lane_occupancy(state: TrafficState, road: Road) -> Tensor:
    """``[B, N, L]`` bool: lanes each active vehicle belongs to under ``road.lane_membership``
    (every lane its body overlaps, or its nearest-centre lane); False for inactive slots."""
    return box_occupancy(BodyBox.of_state(state), state.active, road)


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
        method: ``"pairwise"``, ``"sorted"`` or ``"auto"`` (the faster of the two for these
            shapes, see :func:`_auto_method`).
    """
    x = x.detach()
    if ring_length is not None:
        x = torch.remainder(x, ring_length)
    if method == "auto":
        method = _auto_method(*occupancy.shape)
    if method == "pairwise":
        return _leaders_pairwise(x, occupancy, ring_length)
    if method == "sorted":
        return _leaders_sorted(x, occupancy, ring_length)
    raise ValueError(f"method must be 'auto', 'pairwise' or 'sorted', got {method!r}")


def _auto_method(batch: int, vehicles: int, lanes: int) -> Literal["pairwise", "sorted"]:
    """The faster search for these shapes, from measurements on a 2-core CPU.

    Eager timings of one search (µs), pairwise / sorted: 4 lanes, 1024 x 16: 510 / 1430,
    1024 x 48: 3200 / 4100, 4096 x 40: 45000 / 15000; 1 lane, 1024 x 16: 490 / 370,
    64 x 16: 65 / 87, 1 x 10: 36 / 62. Compiled, 4 lanes, 4096 x 40: 6.7 / 4.7 M vehicle-steps/s
    for a whole step. The choice depends on shapes only, so it is fixed when a step is compiled.
    """
    if vehicles > PAIRWISE_MAX_VEHICLES:
        return "sorted"
    if batch * vehicles <= PAIRWISE_SMALL_BATCH:
        return "pairwise"
    # Compiled, the pairwise table is fused into one loop and never stored.
    fits = torch.compiler.is_compiling() or batch * vehicles * vehicles <= PAIRWISE_MAX_TABLE
    return "pairwise" if fits and vehicles <= PAIRWISE_MAX_VEHICLES_PER_LANE * lanes else "sorted"


def _lane_sets(occupancy: Tensor) -> Tensor:
    """Each vehicle's set of lanes in the cheapest form to intersect pairwise.

    ``[B, N]`` bool for one lane, ``[B, N]`` int32 bitmasks up to :data:`_MAX_BITMASK_LANES`
    lanes (one bitwise AND per pair instead of a matrix product), else ``[B, N, L]`` float.
    """
    lanes = occupancy.shape[-1]
    if lanes == 1:
        return occupancy.squeeze(-1)
    if lanes <= _MAX_BITMASK_LANES:
        lane_bit = torch.ones(lanes, dtype=torch.int32, device=occupancy.device)
        shifts = torch.arange(lanes, dtype=torch.int32, device=occupancy.device)
        lane_bit = lane_bit.bitwise_left_shift(shifts)
        return (occupancy * lane_bit).sum(-1, dtype=torch.int32)
    return occupancy.to(torch.float32)


def _share_a_lane(sets_a: Tensor, sets_b: Tensor) -> Tensor:
    """``[B, N, N]`` bool, ``[b, i, j]``: vehicle ``i`` of ``sets_a`` and ``j`` of ``sets_b``."""
    if sets_a.dim() == 3:
        return torch.bmm(sets_a, sets_b.transpose(1, 2)) > 0
    shared = sets_a.unsqueeze(2) & sets_b.unsqueeze(1)
    return shared if shared.dtype == torch.bool else shared != 0


def _closeness(ahead: Tensor, n: int, ring: bool) -> Tensor:
    """``n`` minus the position of a vehicle in another's order of vehicles ahead; 0 if not ahead.

    ``ahead`` is the vehicle's rank minus the other's (ranks by ``(x, index)``). The vehicles
    ahead are the later ranks, nearest first, then on a ring the earlier ones: rank ``r``'s
    leader is ``(r + n + 1 - closeness) mod n`` for the sharing vehicle of largest closeness.
    """
    behind = torch.where(ahead < 0, 1 - ahead, 0) if ring else 0
    return torch.where(ahead > 0, n + 1 - ahead, behind)


def _leaders_pairwise(x: Tensor, occupancy: Tensor, ring_length: float | None) -> Neighbors:
    n = x.shape[1]
    ring = ring_length is not None
    order = torch.argsort(x, dim=1, stable=True)
    index = torch.arange(n, device=x.device)
    sets = _lane_sets(occupancy)
    if torch.compiler.is_compiling():
        # Compiled, the [B, N, N] loop is fused and must not gather: work in vehicle order with
        # per-pair rank differences, in int32 like the lane sets.
        rank = torch.empty_like(order).scatter_(1, order, index.expand_as(order))
        rank = rank.to(torch.int32)
        closeness = _closeness(rank.unsqueeze(1) - rank.unsqueeze(2), n, ring)
        best = torch.where(_share_a_lane(sets, sets), closeness, 0).amax(dim=2)
        leader = order.gather(1, torch.remainder(rank + (n + 1) - best, n).long())
        return Neighbors(torch.where(best > 0, leader, index), best > 0)
    # Eager, every [B, N, N] temporary costs memory traffic: work in rank order, where the rank
    # differences are one small [N, N] table. int32: the narrowest type whose max-reduction is
    # vectorised well on CPU; reducing over dim 1 vectorises over the contiguous last one.
    ranked_sets = sets.gather(1, order if sets.dim() == 2 else order.unsqueeze(-1).expand_as(sets))
    closeness = _closeness(index.unsqueeze(1) - index.unsqueeze(0), n, ring).to(torch.int32)
    best = (_share_a_lane(ranked_sets, ranked_sets) * closeness).amax(dim=1)
    leader_rank = torch.remainder(index + (n + 1) - best, n)
    leader_by_rank = torch.where(best > 0, order.gather(1, leader_rank), order)
    leader = torch.empty_like(order).scatter_(1, order, leader_by_rank)
    return Neighbors(leader, leader != index)


def _leaders_sorted(x: Tensor, occupancy: Tensor, ring_length: float | None) -> Neighbors:
    batch, n, lanes = occupancy.shape
    order = torch.argsort(x, dim=1, stable=True)
    x_sorted = x.gather(1, order)
    occ_by_rank = occupancy.gather(1, order.unsqueeze(-1).expand(batch, n, lanes)).transpose(1, 2)
    rank = torch.arange(n, device=x.device)
    occupied_rank = torch.where(occ_by_rank, rank, n)  # [B, L, N]
    first_at_or_after = occupied_rank.flip(-1).cummin(-1).values.flip(-1)
    no_rank = torch.full_like(first_at_or_after[..., :1], n)
    next_rank = torch.cat([first_at_or_after[..., 1:], no_rank], -1)
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


def along_road(distance: Tensor, lower_index: Tensor, ring_length: float | None) -> Tensor:
    """Front-to-front ``distance`` (m, ``x_other - x``) as the distance ahead along the road.

    On a ring it is reduced to ``[0, ring_length)``, and a tie with a vehicle of lower index
    (``lower_index``, bool, broadcastable) counts as a whole lap: in the ``(x, index)`` order that
    vehicle is behind. Unchanged on a straight road."""
    if ring_length is None:
        return distance
    distance = torch.remainder(distance, ring_length)
    return torch.where((distance == 0) & lower_index, distance + ring_length, distance)


def _leader_distance(x: Tensor, leader: Tensor, ring_length: float | None) -> Tensor:
    own_index = torch.arange(x.shape[1], device=x.device)
    return along_road(x.gather(1, leader) - x, leader < own_index, ring_length)


def gap_to_leader(
    x: Tensor, rear_x: Tensor, front_x: Tensor, leader: Tensor, ring_length: float | None
) -> Tensor:
    """``[B, N]`` gap (m) from each body's front to its leader's rear, along the road.

    Args:
        x: ``[B, N]`` front-bumper positions (m).
        rear_x, front_x: ``[B, N]`` body extent along the road (see :func:`longitudinal_extent`).
        leader: ``[B, N]`` leader indices.
        ring_length: ring circumference (m), or ``None`` for a straight road.
    """
    rear_overhang_lead = (rear_x - x).gather(1, leader)
    return _leader_distance(x, leader, ring_length) + rear_overhang_lead - (front_x - x)


def leader_gap_and_speed(
    state: TrafficState, neighbors: Neighbors, road: Road
) -> tuple[Tensor, Tensor]:
    """Bumper-to-bumper gap (m) to the leader and the leader's speed along the road (m/s).

    Returns:
        ``(gap, v_lead)``, each ``[B, N]``; meaningless (but finite) where there is no leader.
        For vehicles aligned with the road, ``gap = x_lead - length_lead - x``.
    """
    cos_h, sin_h = torch.cos(state.heading), torch.sin(state.heading)
    rear_x, front_x = longitudinal_extent(state.x, state.length, state.width, cos_h, sin_h)
    gap = gap_to_leader(state.x, rear_x, front_x, neighbors.leader, road.ring_length)
    return gap, (state.v * cos_h).gather(1, neighbors.leader)


def lane_end_ahead(
    state: TrafficState,
    road: Road,
    gap: Tensor,
    v_lead: Tensor,
    has_leader: Tensor,
    leaving: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(gap, v_lead, has_leader)`` with the ends of lanes (``road.lane_ends``) as standing
    leaders: where the lane of a vehicle's nearest centre ends ahead of it, nearer than its
    leader's rear, the leader becomes the end (gap = end - x, speed 0). Vehicles ``leaving``
    (``[B, N]`` bool: changing lane away) are exempt. Shapes ``[B, N]``; the gap to an end is
    differentiable in ``x``."""
    if road.lane_ends is None:
        return gap, v_lead, has_leader
    to_end = road.lane_end_x(state.x)[road.nearest_lane(state.y)] - state.x
    if leaving is not None:
        to_end = torch.where(leaving, torch.inf, to_end)
    return behind_end(to_end, gap, v_lead, has_leader)


def behind_end(
    to_end: Tensor, gap: Tensor, v_lead: Tensor, has_leader: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``(gap, v_lead, has_leader)`` with a standing leader ``to_end`` (m) ahead (``inf``:
    none) where it is nearer than the leader's rear. Shapes ``[B, N]``."""
    nearer = torch.isfinite(to_end) & (~has_leader | (to_end < gap))
    return (
        torch.where(nearer, to_end, gap),
        torch.where(nearer, torch.zeros_like(v_lead), v_lead),
        has_leader | nearer,
    )


def box_collisions(
    x: Tensor, box: BodyBox, neighbors: Neighbors, ring_length: float | None
) -> Tensor:
    """``[B, N]`` bool: vehicles overlapping their leader along the road (gap < 0), and those
    leaders; ``x`` ``[B, N]`` (m).

    One rule for the IDM and the collision flag: a pair that shares a lane under the road's lane
    membership and overlaps along it is what the IDM sees as a negative gap, so it is a collision
    (also when, under ``"body"``, two cars side by side merely touch the same lane strip). Under
    ``"center"`` a car straddling a boundary belongs to one lane only, and passes through bodies
    of the lane next to it.
    """
    lead = neighbors.leader
    gap = gap_to_leader(x, box.rear_x, box.front_x, lead, ring_length)
    return _with_leaders(neighbors.has_leader & (gap < 0), lead)


def swept_collisions(
    before: TrafficState,
    gap_before: Tensor,
    displacement: Tensor,
    neighbors_before: Neighbors,
    occupancy_after: Tensor,
    road: Road,
) -> Tensor:
    """``[B, N]`` bool: vehicles that went through another one during a step, and those others.

    Each vehicle is taken to move along the road at a constant rate within the step from the
    state ``before`` (``displacement [B, N]``, m, unwrapped), so a car too fast to be seen
    overlapping at either end of the step is still caught. Flagged:

    * a vehicle that reached the leader it had at the start of the step (the swept gap,
      ``gap_before`` minus the distance it closed, fell below zero) and still shares a lane
      with it (``occupancy_after [B, N, L]``);
    * two vehicles whose fronts changed order within the step while sharing a lane at its start
      or at its end, such as a car that enters or leaves a lane sideways while passing through
      a car in it. Between the step's ends the lateral motion is unknown, so a front crossing
      is a collision if the lane is shared at either end. On a ring, a vehicle must move less
      than one ring length relative to another within a step for every crossing to be seen.
    """
    lead = neighbors_before.leader
    closed = displacement - displacement.gather(1, lead)
    lead_lanes = occupancy_after.gather(1, lead.unsqueeze(-1).expand_as(occupancy_after))
    still_shared = (occupancy_after & lead_lanes).any(-1)
    reached = neighbors_before.has_leader & still_shared & (gap_before - closed < 0)
    flagged = _with_leaders(reached, lead)
    x = road.wrap(before.x)
    order = torch.argsort(x, dim=1, stable=True)
    end = (x + displacement).gather(1, order)  # [B, N] in start order
    if road.ring_length is not None:
        # The sequence followed by itself a ring length on sees crossings of the ring's start.
        end = torch.cat([end, end + road.ring_length], dim=1)
    if not torch.compiler.is_compiling() and not bool((end[:, 1:] < end[:, :-1]).any()):
        return flagged  # no two fronts changed order: most steps
    # The lanes at the start and at the end side by side: one pass for both.
    occupancy = torch.cat([lane_occupancy(before, road), occupancy_after], dim=-1)
    return flagged | _crossed_fronts(end, occupancy, order)


def _crossed_fronts(end: Tensor, occupancy: Tensor, order: Tensor) -> Tensor:
    """``[B, N]`` bool: vehicles whose front changed order within the step with the front of
    another vehicle of one of their lanes (``occupancy [B, N, L]``, any number of lane columns).

    ``order [B, N]`` ranks the vehicles by their start ``(x, index)`` and ``end [B, N']`` holds
    their end positions in that order (``N' = 2 N`` on a ring, see :func:`swept_collisions`).
    Per lane, a vehicle was passed when some vehicle before it ends further along (a running
    maximum), and passed another when some vehicle after it ends behind it (a running minimum
    from the front).
    """
    n = order.shape[1]
    member = occupancy.gather(1, order.unsqueeze(-1).expand_as(occupancy)).transpose(1, 2)
    member = member.repeat(1, 1, end.shape[1] // n)  # [B, L, N']
    end = end.unsqueeze(1)
    behind = torch.where(member, end, -torch.inf).cummax(-1).values
    ahead = torch.where(member, end, torch.inf).flip(-1).cummin(-1).values.flip(-1)
    passed = end < torch.nn.functional.pad(behind[..., :-1], (1, 0), value=-torch.inf)
    passing = end > torch.nn.functional.pad(ahead[..., 1:], (0, 1), value=torch.inf)
    crossed = (member & (passed | passing)).any(1).view(order.shape[0], -1, n).any(1)
    return torch.zeros_like(crossed).scatter_(1, order, crossed)


def _with_leaders(hit: Tensor, lead: Tensor) -> Tensor:
    """``hit`` plus every vehicle that is the leader of a hit one. A leader may have several
    followers (under ``"body"``, when it straddles lanes): count hits instead of scattering
    booleans, whose write order for duplicate indices is unspecified."""
    hit_count = torch.zeros_like(lead).scatter_add_(1, lead, hit.long())
    return hit | (hit_count > 0)


def detect_collisions(state: TrafficState, neighbors: Neighbors, road: Road) -> Tensor:
    """``[B, N]`` bool: vehicles whose bounding box overlaps their leader's (both are marked);
    see :func:`box_collisions` for what ``road.lane_membership`` changes."""
    state = state.detach()
    return box_collisions(state.x, BodyBox.of_state(state), neighbors, road.ring_length)
