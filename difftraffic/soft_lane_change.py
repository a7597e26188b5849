"""MOBIL as a smooth choice: human lane changes that carry gradients (with :class:`SoftLanes`).

The discrete MOBIL of :mod:`difftraffic.lane_change` decides who changes lane, when and which
way on detached values: no gradient reaches its parameters, and none tells a driver's speed or
position that it caused a change. With ``step(..., lane_changes=MOBIL(...),
soft_lanes=SoftLanes(...))`` every piece is a smooth function instead:

* **scores per lane**: driver ``i`` scores each lane ``l`` with MOBIL's terms, every leader and
  follower the soft one of :mod:`difftraffic.soft_lanes`:
  ``u_il = a_il + p (new_il + old_i (1 - w_il)) + threshold w_il - keep_right l``, where
  ``a_il`` is its acceleration behind its leader in lane ``l``, ``new_il`` the change of
  acceleration of its follower in lane ``l`` were ``i`` to cut in front of it, ``old_i`` that of
  its follower in its own lane were ``i`` to leave, and ``w_il`` its lane weights. Against the
  own lane's score, a neighbouring lane's is MOBIL's incentive less threshold and bias;
* **safety**: a lane's weight is multiplied by ``sigmoid((a'_n + b_safe) / safety_scale)``, the
  soft test of the new follower's deceleration ``a'_n`` (1 in the own lane and where no
  follower is near);
* **choice**: ``q_il = softmax_l(u_il / choice_scale)`` over the lane the driver is in and its
  neighbours (lanes further away weigh as much as the driver's weight in a lane next to them);
* **lateral motion**: the driver heads for ``y*_i = sum_l q_il c_l`` at a lateral speed
  ``(lane_width / duration) tanh(2 (y* - y) / lane_width) tanh(v / 1 m/s)``: a whole lane at
  about full speed, slowing as it arrives, none when stopped. The heading stays 0 (a sideways
  slide; the discrete MOBIL turns the car).

So steering, positions, speeds and MOBIL's parameters all have true derivatives
(``tests/difftraffic/test_soft_lane_change.py`` checks them against finite differences over
scenarios with several lane changes). What this gives up: the discrete MOBIL's guarantees (a
change is never unsafe, cars never share a gap, two cars never cross into one): the smooth
choice is a differentiable model of lane choice for gradient studies, not a replacement for
the default. Roads with lane ends are refused.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difftraffic.car_following import Drivers
from difftraffic.lane_change import MIN_GAP, MOBIL
from difftraffic.road import Road
from difftraffic.soft_lanes import LaneLeaders, SoftLanes, with_virtual_candidate
from difftraffic.state import TrafficState

__all__ = ["soft_lateral_speed"]

STOPPED_SPEED = 1.0
"""Speed scale (m/s) below which a driver's lateral motion fades out: ``tanh(v / 1 m/s)``."""


def _accelerations(
    drivers: Drivers, v: Tensor, lead_speed: Tensor, gap: Tensor, dt: float
) -> Tensor:
    """``[B, N, ...]`` accelerations (m/s^2) of hypothetical pairs: row ``k`` is vehicle ``k``
    (its speed ``v [B, N]`` and its parameters) behind leaders of speeds ``lead_speed`` (m/s)
    at gaps ``gap`` (m), both ``[B, N, ...]``."""
    batch, n = v.shape
    rows = torch.arange(n, device=v.device).repeat_interleave(gap[0, 0].numel())
    acceleration = drivers.take_vehicles(rows.expand(batch, -1)).acceleration(
        v.reshape(batch, n, *[1] * (gap.dim() - 2)).expand(gap.shape).reshape(batch, -1),
        lead_speed.expand(gap.shape).reshape(batch, -1),
        gap.reshape(batch, -1).clamp_min(MIN_GAP),
        torch.ones(batch, rows.numel(), dtype=torch.bool, device=v.device),
        dt,
    )
    return acceleration.reshape(gap.shape)


def _per_vehicle(value: object, like: Tensor) -> Tensor:
    """A MOBIL parameter broadcast to ``like``'s ``[B, N]`` shape, dtype and device."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).expand_as(like)


def _followers(leaders: LaneLeaders, soft: SoftLanes) -> Tensor:
    """``[B, i, k + 1, L]`` log-weights of car ``k`` as car ``i``'s soft follower in lane ``l``
    (the soft minimum over the cars behind ``i`` of ``g_ki + free_gap (1 - w_kl)``); the last
    candidate is nobody."""
    behind = leaders.ahead.mT  # [B, i, k]: i is ahead of k
    outside = soft.free_gap * (1.0 - leaders.weights.unsqueeze(1))  # [B, 1, k, L]
    logits = torch.where(
        behind.unsqueeze(-1), -(leaders.gap.mT.unsqueeze(-1) + outside) / soft.gap_scale, -torch.inf
    )
    return torch.log_softmax(with_virtual_candidate(logits, soft), dim=2)


def soft_lateral_speed(
    state: TrafficState,
    road: Road,
    drivers: Drivers,
    dt: float,
    params: MOBIL,
    soft: SoftLanes,
    leaders: LaneLeaders,
) -> Tensor:
    """``[B, N]`` lateral speed (m/s, positive to the left) of every human driver with lane
    changes enabled under MOBIL's smooth choice (module docstring); 0 for the others.

    Args:
        state: the state at the start of the step, ``[B, N]``.
        road: the road, without lane ends.
        drivers: the human drivers' car-following model (deterministic).
        dt: the step (s).
        params: MOBIL parameters, broadcastable to ``[B, N]``.
        soft: the soft lanes' scales (``choice_scale`` and ``safety_scale`` among them).
        leaders: :func:`difftraffic.soft_lanes.lane_leaders` of ``state``.
    """
    v, w = state.v, leaders.weights
    lanes = torch.arange(road.num_lanes, device=v.device, dtype=v.dtype)
    own = _accelerations(drivers, v, leaders.lane_speed, leaders.lane_gap, dt)  # [B, i, L]
    log_follower = _followers(leaders, soft)
    follower = log_follower[:, :, :-1].exp()  # [B, i, k, L]
    # k behind i with i as its leader: the cut-in's (and, now, the old follower's) acceleration
    behind_i = _accelerations(drivers, v, leaders.v_along.unsqueeze(1), leaders.gap, dt).mT
    new_gain = (follower * (behind_i.unsqueeze(-1) - own.unsqueeze(1))).sum(2)  # [B, i, L]
    # k behind i in lane l were i to leave: behind i's leader there
    closed_gap = leaders.gap.unsqueeze(-1) + (
        leaders.length.unsqueeze(-1) + leaders.lane_gap
    ).unsqueeze(1)
    closed = _accelerations(drivers, v, leaders.lane_speed.unsqueeze(1), closed_gap, dt)
    old_gain = (follower * (closed.transpose(1, 2) - behind_i.unsqueeze(-1))).sum(2)  # [B, i, L]
    politeness = _per_vehicle(params.politeness, v).unsqueeze(-1)
    score = (
        own
        + politeness * (new_gain + (w * old_gain).sum(-1, keepdim=True) * (1.0 - w))
        + _per_vehicle(params.threshold, v).unsqueeze(-1) * w
        - _per_vehicle(params.keep_right, v).unsqueeze(-1) * lanes
    )
    b_safe = _per_vehicle(params.b_safe, v)[..., None, None]
    log_safe = torch.nn.functional.logsigmoid((behind_i.unsqueeze(-1) + b_safe) / soft.safety_scale)
    log_safety = torch.logsumexp(
        torch.cat([log_follower[:, :, :-1] + log_safe, log_follower[:, :, -1:]], dim=2), dim=2
    )
    near = (lanes.unsqueeze(0) - lanes.unsqueeze(1)).abs() <= 1  # [m, l]
    log_reachable = torch.logsumexp(
        leaders.log_weights.unsqueeze(-1) + torch.where(near, 0.0, -torch.inf), dim=-2
    )
    logits = score / soft.choice_scale + (1.0 - w) * log_safety + log_reachable
    target = (torch.softmax(logits, dim=-1) * road.lane_centers(v)).sum(-1)
    lateral = (
        road.lane_width
        / _per_vehicle(params.duration, v)
        * torch.tanh(2.0 * (target - state.y) / road.lane_width)
        * torch.tanh(v / STOPPED_SPEED)
    )
    moving = state.active & ~state.is_av & _per_vehicle(params.enabled, state.active)
    return torch.where(moving, lateral, torch.zeros_like(lateral))
