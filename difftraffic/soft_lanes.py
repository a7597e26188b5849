"""Smooth lane membership and leader selection: gradients through who follows whom.

Under the discrete rules (``Road.lane_membership``) the lane a car belongs to, and so which car
a driver follows, is a step function of lateral position: it carries no gradient, and an AV's
steering reaches the humans' accelerations only through its own longitudinal motion (the paper's
"partial gradient"). :class:`SoftLanes` replaces both decisions by smooth functions, so that the
lateral position of every car, and through it the AV's steering, has a true derivative:

* **lane weights** ``w[b, j, l] = softmax_l(-(y_j - c_l)^2 / (2 lateral_scale^2))`` over lane
  centres ``c_l``: the authors' nearest-centre rule as ``lateral_scale -> 0``;
* **the gap to a lane's leader**, for follower ``i`` and lane ``l``, a soft minimum over the
  cars ``j`` ahead of ``i`` of ``g_ij + free_gap (1 - w[j, l])`` (a car outside the lane reads
  as ``free_gap`` further away than it is), with scale ``gap_scale``: ``G_il = -gap_scale
  log(sum_j exp(-(g_ij + free_gap (1 - w_jl)) / gap_scale) + exp(-free_gap / gap_scale))``.
  The last term is a virtual leader ``free_gap`` ahead that drives at the follower's own speed:
  an empty lane reads as a gap of ``free_gap``;
* **the follower's gap** ``G_i = sum_l w[i, l] G_il`` and the **leader's speed** the same
  mixture of the candidates' speeds along the road, weighted as the soft minimum weighs them.

For a car ``g`` metres ahead in the follower's lane, the nearest other candidate ``g + d`` ahead
changes the gap by about ``-gap_scale exp(-d / gap_scale)``: with the defaults (0.25 m) and cars
a few metres apart the result is the discrete leader's gap to well under a millimetre; a car
centred in a neighbouring lane of 4 m has weight ``exp(-128)`` in this one, and the weights go
from 1 % to 99 % within 7 cm of a boundary (log-odds ``lane_width d / lateral_scale^2`` at
``d`` from it). What stays discrete:
which cars are *ahead* (the order of the front bumpers; a car overtaken has a gap through zero
anyway) and the collision test. Cost: ``O(N^2 L)`` per world, for worlds of tens of cars (the
pace car's), not thousands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from difftraffic.errors import check_positive
from difftraffic.neighbors import along_road
from difftraffic.road import Road
from difftraffic.state import TrafficState, longitudinal_extent

__all__ = [
    "LaneLeaders",
    "SoftLanes",
    "lane_leaders",
    "soft_lane_log_weights",
    "soft_lane_weights",
    "soft_leader_gap_and_speed",
]


@dataclass(frozen=True)
class SoftLanes:
    """Scales of the smooth lane membership and leader selection (see the module docstring).

    Attributes:
        lateral_scale: width (m) of the lane weights' transition around a lane boundary, > 0.
        gap_scale: scale (m) of the soft minimum over candidate leaders' gaps, > 0.
        free_gap: the gap (m) read when no car is ahead in the lane, and how much further a
            car outside the lane reads, > 0.
        choice_scale: temperature (m/s^2) of MOBIL's smooth lane choice, > 0
            (:mod:`difftraffic.soft_lane_change`; used only with lane changes).
        safety_scale: scale (m/s^2) of MOBIL's smooth safety test, > 0 (idem).
    """

    lateral_scale: float = 0.25
    gap_scale: float = 0.25
    free_gap: float = 1000.0
    choice_scale: float = 0.02
    safety_scale: float = 0.5

    def __post_init__(self) -> None:
        check_positive("SoftLanes.lateral_scale", self.lateral_scale)
        check_positive("SoftLanes.gap_scale", self.gap_scale)
        check_positive("SoftLanes.free_gap", self.free_gap)
        check_positive("SoftLanes.choice_scale", self.choice_scale)
        check_positive("SoftLanes.safety_scale", self.safety_scale)


def soft_lane_weights(y: Tensor, road: Road, lateral_scale: float) -> Tensor:
    """``[B, N, L]`` lane weights of lateral positions ``y [B, N]`` (m): a softmax over lanes of
    ``-(y - centre)^2 / (2 lateral_scale^2)``; each row sums to 1."""
    return soft_lane_log_weights(y, road, lateral_scale).exp()


def soft_lane_log_weights(y: Tensor, road: Road, lateral_scale: float) -> Tensor:
    """``[B, N, L]`` logarithms of :func:`soft_lane_weights`, finite where the weights
    underflow."""
    offset = y.unsqueeze(-1) - road.lane_centers(y)
    return torch.log_softmax(-offset.square() / (2.0 * lateral_scale**2), dim=-1)


def _ahead(x: Tensor, active: Tensor, ring_length: float | None) -> tuple[Tensor, Tensor]:
    """``(distance, ahead)``, each ``[B, N, N]``: front-to-front distance from ``i`` (rows) to
    ``j`` along the road (m), and whether ``j`` is an active car ahead of ``i`` (ordered by
    ``(x, index)`` as the discrete search; on a ring every other car is ahead)."""
    index = torch.arange(x.shape[1], device=x.device)
    later = index.unsqueeze(0) > index.unsqueeze(1)  # [i, j]: j has the larger index
    lower = index.unsqueeze(0) < index.unsqueeze(1)
    distance = along_road(x.unsqueeze(1) - x.unsqueeze(2), lower, ring_length)
    if ring_length is not None:
        ahead = ~torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
    else:
        d = distance.detach()
        ahead = (d > 0) | ((d == 0) & later)
    return distance, ahead & active.unsqueeze(1) & active.unsqueeze(2)


class LaneLeaders(NamedTuple):
    """Every car's smooth leader in every lane (:func:`lane_leaders`).

    Attributes:
        log_weights: ``[B, N, L]`` logarithms of the lane weights
            (:func:`soft_lane_log_weights`).
        weights: ``[B, N, L]`` lane weights (:func:`soft_lane_weights`).
        lane_gap: ``[B, N, L]`` gap (m) from car ``i`` to its soft leader in lane ``l``.
        lane_speed: ``[B, N, L]`` that leader's speed along the road (m/s).
        gap: ``[B, N, N]`` bumper gap (m) from car ``i`` (rows) to car ``j`` along the road.
        ahead: ``[B, N, N]`` bool, whether ``j`` is an active car ahead of ``i``.
        v_along: ``[B, N]`` every car's speed along the road (m/s).
        length: ``[B, N]`` every car's extent along the road (m).
    """

    log_weights: Tensor
    weights: Tensor
    lane_gap: Tensor
    lane_speed: Tensor
    gap: Tensor
    ahead: Tensor
    v_along: Tensor
    length: Tensor


def with_virtual_candidate(logits: Tensor, soft: SoftLanes) -> Tensor:
    """Candidates' ``logits = -distance / gap_scale`` along dim 2 (``-inf`` where not a
    candidate) with a virtual candidate at ``free_gap`` appended (index ``N``)."""
    free = torch.full_like(logits[:, :, :1], -soft.free_gap / soft.gap_scale)
    return torch.cat([logits, free], dim=2)


def lane_leaders(state: TrafficState, road: Road, soft: SoftLanes) -> LaneLeaders:
    """Every car's smooth gap to, and speed of, its leader in every lane (see the module
    docstring), differentiable in every car's ``x``, ``y``, ``v`` and ``heading``."""
    cos_h, sin_h = torch.cos(state.heading), torch.sin(state.heading)
    rear_x, front_x = longitudinal_extent(state.x, state.length, state.width, cos_h, sin_h)
    distance, ahead = _ahead(state.x, state.active, road.ring_length)
    # g_ij = distance + rear overhang of j - front overhang of i
    gap = distance + (rear_x - state.x).unsqueeze(1) - (front_x - state.x).unsqueeze(2)
    log_weights = soft_lane_log_weights(state.y, road, soft.lateral_scale)  # [B, N, L]
    weights = log_weights.exp()
    outside = soft.free_gap * (1.0 - weights.unsqueeze(1))  # [B, 1, N, L], by candidate j
    logits = torch.where(
        ahead.unsqueeze(-1), -(gap.unsqueeze(-1) + outside) / soft.gap_scale, -torch.inf
    )
    logits = with_virtual_candidate(logits, soft)  # the virtual leader is candidate N
    lane_gap = -soft.gap_scale * torch.logsumexp(logits, dim=2)  # [B, N, L]
    choice = torch.softmax(logits, dim=2)
    v_along = state.v * cos_h
    speeds = torch.cat([v_along.unsqueeze(1).expand_as(gap), v_along.unsqueeze(-1)], dim=2)
    lane_speed = (choice * speeds.unsqueeze(-1)).sum(dim=2)  # [B, N, L]
    length = front_x - rear_x
    return LaneLeaders(log_weights, weights, lane_gap, lane_speed, gap, ahead, v_along, length)


def soft_leader_gap_and_speed(
    state: TrafficState, road: Road, soft: SoftLanes
) -> tuple[Tensor, Tensor]:
    """``(gap, v_lead)``, each ``[B, N]``: every car's smooth gap to its leader (m, bumper to
    bumper along the road) and its leader's speed along the road (m/s), differentiable in every
    car's ``x``, ``y``, ``v`` and ``heading``: its lanes' (:func:`lane_leaders`) mixed by its
    own lane weights. Inactive slots get ``free_gap`` and their own speed."""
    leaders = lane_leaders(state, road, soft)
    return mixed_by_lane(leaders.weights, leaders.lane_gap), mixed_by_lane(
        leaders.weights, leaders.lane_speed
    )


def mixed_by_lane(weights: Tensor, per_lane: Tensor) -> Tensor:
    """``[B, N]``: ``per_lane [B, N, L]`` mixed by the cars' own lane ``weights [B, N, L]``."""
    return (weights * per_lane).sum(-1)
