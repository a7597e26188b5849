"""Lane changes of human drivers: MOBIL (Kesting, Treiber & Helbing, 2007), batched over ``[B, N]``.

Each step, every human driver with lane changes enabled who is not already changing lane weighs
a move to each neighbouring lane with its own car-following model (in the lanes as they are at
the start of the step):

* **incentive**: ``a'_i - a_i + p (a'_n - a_n + a'_o - a_o) > threshold + bias``, where ``a_i``,
  ``a'_i`` are the driver's accelerations behind its lane leader now and behind the target lane's
  leader, ``n`` the new follower (the nearest vehicle behind it in the target lane), ``o`` the old
  follower (behind it in its own lane), ``p`` the politeness. The bias is ``-keep_right`` for a
  move to the right (towards lane 0, lower ``y``) and ``+keep_right`` for a move to the left: a
  positive ``keep_right`` is the European keep-right rule, 0 the symmetric (US) one.
* **safety**: the new follower would brake no harder than ``b_safe`` (``a'_n >= -b_safe``), and
  the driver's body would not overlap the new leader's or the new follower's along the road.

Where both neighbouring lanes pass, the larger incentive wins. A vehicle already changing lane
counts as a member of the lane it moves to. Decisions are taken in parallel but judged as if
taken one after another, moves to the left before moves to the right and, within a direction,
from the front to the back: every move is judged a second time with the moves decided before
it in place, and dropped when it no longer passes. Without that second look a whole platoon
would switch lanes together into a gap that then is no longer there, and back again (the
ping-pong of parallel updates), and two cars could enter the same gap from both sides. So every
change is safe for the state it starts from, the changes decided before it included.

**Lateral motion.** A lane change is not instantaneous: the driver turns its heading to ``±theta``
with ``sin(theta) = lane_width / (duration v)`` (at most :func:`steepest_turn`, the turn that keeps
its body's bounding box in its lane, 0.21 rad for a 5 x 2 m car in a 4 m lane) and keeps it
until its front reaches the target lane's centre, where it is put exactly on the centre with
heading 0. At constant speed the change takes ``duration`` seconds; slower drivers take longer,
and a stopped one waits. A changing car is a member of its target lane from the first step of
its change (:func:`with_target_lanes`): the cars behind it there follow it at once, as they
would a car that signals and noses in; otherwise lane membership follows the body as for every
vehicle (:mod:`difftraffic.road`). The heading is a vehicle's only lane-change state: a
driver with lane changes enabled and a non-zero heading is changing lane, towards the side its
heading points to.

**What the gradient carries.** The decision (who changes, when, which way) and the angle are
discrete or computed on detached values: no gradient reaches the MOBIL parameters, and none
tells a driver's speed or position that it caused or prevented a lane change. Within a change the
lateral and longitudinal motion ``v sin(theta) dt``, ``v cos(theta) dt`` are differentiable in the
speed; the final placement on the lane centre is a constant (zero gradient for ``y`` there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from difftraffic.car_following import Drivers, Parameter, Scalar, check_parameters
from difftraffic.neighbors import behind_end
from difftraffic.road import Road
from difftraffic.state import TrafficState, longitudinal_extent

MAX_LANE_CHANGE_ANGLE = 0.5
"""Largest heading (rad, about 29 degrees) a human driver takes to change lane; a tighter bound
comes from the car's size (:func:`steepest_turn`)."""

DETERMINISTIC_DRIVERS_ONLY = (
    "MOBIL lane changes need deterministic car-following drivers: set every Krauss sigma to 0 "
    "in a scenario with lane changes"
)

MIN_GAP = 1e-2
"""Gap (m) at which a hypothetical follower's acceleration is evaluated when bodies would overlap
(the change is unsafe anyway)."""


@dataclass(frozen=True)
class MOBIL:
    """MOBIL lane-change parameters: floats or tensors broadcastable to ``[B, N]``.

    Attributes:
        politeness: ``p >= 0``, the weight of the followers' acceleration changes.
        threshold: acceleration gain (m/s^2, >= 0) a change must bring.
        b_safe: largest deceleration (m/s^2, > 0) a change may impose on the new follower.
        keep_right: bias (m/s^2) for the right lane (lane 0): added to the gain of a move to
            the right, taken from a move to the left; 0 (default) is symmetric, 0.3 the
            European keep-right rule of Kesting et al.
        duration: time (s, > 0) a change takes at constant speed (the lateral motion).
        enabled: which drivers change lanes, bool; vehicles where it is False (and every
            autonomous vehicle) never do.

    Defaults are Kesting et al.'s (2007) but ``keep_right``.
    """

    PARAMETERS: ClassVar[dict[str, Parameter]] = {
        "politeness": Parameter("", 0.0, low_inclusive=True),
        "threshold": Parameter("m/s^2", 0.0, low_inclusive=True),
        "b_safe": Parameter("m/s^2"),
        "keep_right": Parameter("m/s^2", -math.inf),
        "duration": Parameter("s"),
    }

    politeness: Scalar = 0.5
    threshold: Scalar = 0.1
    b_safe: Scalar = 4.0
    keep_right: Scalar = 0.0
    duration: Scalar = 2.0
    enabled: Tensor | bool = True

    def __post_init__(self) -> None:
        check_parameters("MOBIL", self, self.PARAMETERS)
        enabled = self.enabled
        if not isinstance(enabled, bool) and not (
            isinstance(enabled, Tensor) and enabled.dtype == torch.bool
        ):
            raise ValueError(f"MOBIL.enabled must be a bool or a bool tensor, got {enabled!r}")

    def tensors(self) -> dict[str, Any]:
        """Field name -> value."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to(self, like: Tensor) -> MOBIL:
        """The same parameters as tensors with ``like``'s dtype (``enabled``: bool) and device."""
        return MOBIL(
            **{
                name: torch.as_tensor(value).to(
                    dtype=torch.bool if name == "enabled" else like.dtype, device=like.device
                )
                for name, value in self.tensors().items()
            }
        )


class LaneNeighbors(NamedTuple):
    """The nearest vehicles ahead of and behind every vehicle in every lane.

    Attributes:
        ahead, behind: ``[B, L, N]`` long, ``[b, l, i]``: the nearest member of lane ``l``
            ahead of (behind) vehicle ``i`` in ``(x, index)`` order, never ``i`` itself;
            ``i`` where there is none.
        has_ahead, has_behind: ``[B, L, N]`` bool.
    """

    ahead: Tensor
    behind: Tensor
    has_ahead: Tensor
    has_behind: Tensor


def lane_neighbors(x: Tensor, occupancy: Tensor, ring_length: float | None) -> LaneNeighbors:
    """Nearest lane members ahead and behind of every vehicle, whether it is in the lane or not.

    Args:
        x: ``[B, N]`` front-bumper positions (m); only their order matters.
        occupancy: ``[B, N, L]`` bool lane membership.
        ring_length: ring circumference (m), or ``None`` for a straight road; on a ring the
            search wraps around.

    Runs in ``O(B L N)`` after one sort: a running minimum (maximum) of member ranks per lane.
    """
    batch, n, lanes = occupancy.shape
    x = x.detach() if ring_length is None else torch.remainder(x.detach(), ring_length)
    order = torch.argsort(x, dim=1, stable=True)
    member = occupancy.gather(1, order.unsqueeze(-1).expand(batch, n, lanes)).transpose(1, 2)
    rank = torch.arange(n, device=x.device)
    at_or_after = torch.where(member, rank, n).flip(-1).cummin(-1).values.flip(-1)
    at_or_before = torch.where(member, rank, -1).cummax(-1).values
    ahead = torch.cat([at_or_after[..., 1:], torch.full_like(at_or_after[..., :1], n)], -1)
    behind = torch.cat([torch.full_like(at_or_before[..., :1], -1), at_or_before[..., :-1]], -1)
    if ring_length is not None:
        ahead = torch.where(ahead == n, at_or_after[..., :1], ahead)
        behind = torch.where(behind < 0, at_or_before[..., -1:], behind)
        ahead = torch.where(ahead == rank, n, ahead)
        behind = torch.where(behind == rank, -1, behind)
    has_ahead, has_behind = ahead < n, behind >= 0
    by_rank = order.unsqueeze(1).expand(batch, lanes, n)
    own = by_rank
    ahead = torch.where(has_ahead, by_rank.gather(2, ahead.clamp(max=n - 1)), own)
    behind = torch.where(has_behind, by_rank.gather(2, behind.clamp(min=0)), own)

    def by_vehicle(value: Tensor) -> Tensor:
        return torch.empty_like(value).scatter_(2, by_rank, value)

    return LaneNeighbors(
        by_vehicle(ahead), by_vehicle(behind), by_vehicle(has_ahead), by_vehicle(has_behind)
    )


class _Geometry(NamedTuple):
    """What the accelerations of hypothetical leader-follower pairs need, ``[B, N]`` each."""

    x: Tensor
    v: Tensor  # speed (m/s)
    v_along: Tensor  # speed along the road, what a follower sees of its leader (m/s)
    rear: Tensor  # rear_x - x: the rear overhang (m, <= 0)
    front: Tensor  # front_x - x (m)
    ring_length: float | None
    lane_ends: Tensor  # [L] where each lane ends (m, inf where it goes on)


def _gap(geometry: _Geometry, follower: Tensor, leader: Tensor) -> Tensor:
    """``[B, N]`` gap (m) from ``follower``'s front to ``leader``'s rear (indices ``[B, N]``)."""
    x, rear, front = geometry.x, geometry.rear, geometry.front
    distance = x.gather(1, leader) - x.gather(1, follower)
    if geometry.ring_length is not None:
        distance = torch.remainder(distance, geometry.ring_length)
    return distance + rear.gather(1, leader) - front.gather(1, follower)


def _acceleration(
    drivers: Drivers,
    geometry: _Geometry,
    dt: float,
    follower: Tensor,
    leader: Tensor,
    has_leader: Tensor,
    lane: Tensor,
) -> Tensor:
    """``[B, N]`` acceleration (m/s^2) of vehicles ``follower`` in ``lane`` behind ``leader``
    (free road where ``has_leader`` is False), or behind the lane's end where that is nearer;
    ``drivers`` are the followers' own (slot ``k`` holds vehicle ``follower[:, k]``'s
    parameters)."""
    gap = _gap(geometry, follower, leader)
    v_follower, v_leader = geometry.v.gather(1, follower), geometry.v_along.gather(1, leader)
    to_end = geometry.lane_ends[lane] - geometry.x.gather(1, follower)
    gap, v_leader, has_leader = behind_end(to_end, gap, v_leader, has_leader)
    return drivers.acceleration(v_follower, v_leader, gap.clamp_min(MIN_GAP), has_leader, dt)


def _pick(table: Tensor, lane: Tensor) -> Tensor:
    """``table[b, lane[b, i], i]`` for a ``[B, L, N]`` table and ``[B, N]`` lanes."""
    return table.gather(1, lane.unsqueeze(1)).squeeze(1)


class _Move(NamedTuple):
    gain: Tensor  # [B, N] the incentive minus its threshold and bias (m/s^2)
    safe: Tensor  # [B, N] bool


def _judge(
    drivers: Drivers,
    geometry: _Geometry,
    dt: float,
    params: MOBIL,
    lanes: LaneNeighbors,
    lane: Tensor,
    target: Tensor,
    direction: int,
) -> _Move:
    """MOBIL's incentive and safety criterion for every vehicle moving from ``lane`` to
    ``target`` (``[B, N]`` long, a valid lane)."""
    me = torch.arange(lane.shape[1], device=lane.device).expand_as(lane)
    leader, has_leader = _pick(lanes.ahead, lane), _pick(lanes.has_ahead, lane)
    old_follower, has_old = _pick(lanes.behind, lane), _pick(lanes.has_behind, lane)
    new_leader, has_new_leader = _pick(lanes.ahead, target), _pick(lanes.has_ahead, target)
    new_follower, has_new = _pick(lanes.behind, target), _pick(lanes.has_behind, target)

    new_own = drivers.take_vehicles(new_follower)
    old_own = drivers.take_vehicles(old_follower)

    def acc(own: Drivers, follower: Tensor, lead: Tensor, leads: Tensor, in_lane: Tensor) -> Tensor:
        return _acceleration(own, geometry, dt, follower, lead, leads, in_lane)

    own_before = acc(drivers, me, leader, has_leader, lane)
    own_gain = acc(drivers, me, new_leader, has_new_leader, target) - own_before
    new_after = acc(new_own, new_follower, me, torch.ones_like(has_new), target)
    new_before = acc(new_own, new_follower, new_leader, has_new_leader, target)
    new_gain = torch.where(has_new, new_after - new_before, 0)
    old_after = acc(old_own, old_follower, leader, has_leader, lane)
    old_before = acc(old_own, old_follower, me, has_old, lane)
    old_gain = torch.where(has_old, old_after - old_before, 0)
    bias = direction * params.keep_right  # a handicap to the left, a head start to the right
    gain = own_gain + params.politeness * (new_gain + old_gain) - params.threshold - bias
    clear_ahead = ~has_new_leader | (_gap(geometry, me, new_leader) > 0)
    clear_behind = ~has_new | (_gap(geometry, new_follower, me) > 0)
    safe = (~has_new | (new_after >= -params.b_safe)) & clear_ahead & clear_behind
    return _Move(gain, safe)


def mobil_directions(
    state: TrafficState,
    road: Road,
    drivers: Drivers,
    dt: float,
    params: MOBIL,
    occupancy: Tensor,
) -> Tensor:
    """``[B, N]`` long in ``{-1, 0, 1}``: the lane change each driver starts in this step
    (``-1``: to the right, towards lane 0; ``1``: to the left; ``0``: none).

    Args:
        state: the state at the start of the step, ``[B, N]``.
        road: the road.
        drivers: the human drivers' car-following model; it must be deterministic (no Krauss
            ``sigma > 0``).
        dt: the step (s).
        params: MOBIL parameters, broadcastable to ``[B, N]``, in the state's dtype.
        occupancy: ``[B, N, L]`` bool lane membership of ``state``; vehicles changing lane are
            added to their target lanes here (:func:`with_target_lanes`).
    """
    if drivers.needs_generator:
        raise ValueError(DETERMINISTIC_DRIVERS_ONLY)
    with torch.no_grad():
        state = state.detach()
        human = state.active & ~state.is_av & params.enabled
        changing = changing_lane(state, params)
        lane = road.nearest_lane(state.y)
        intent = with_target_lanes(occupancy, state, road, params)
        cos_h, sin_h = torch.cos(state.heading), torch.sin(state.heading)
        rear_x, front_x = longitudinal_extent(state.x, state.length, state.width, cos_h, sin_h)
        geometry = _Geometry(
            road.wrap(state.x), state.v, state.v * cos_h, rear_x - state.x, front_x - state.x,
            road.ring_length, road.lane_end_x(state.x),
        )  # fmt: skip
        deciding = human & ~changing

        def judge(
            direction: int, members: Tensor, members_behind: Tensor | None = None
        ) -> tuple[Tensor, Tensor, Tensor]:
            """Who would move ``direction`` with lane membership ``members`` (behind the
            vehicles: ``members_behind`` where given): ``(wants [B, N] bool, gain [B, N],
            target [B, N])``."""
            target = lane + direction
            possible = deciding & (target >= 0) & (target < road.num_lanes)
            target = target.clamp(0, road.num_lanes - 1)
            possible = possible & (geometry.lane_ends[target] > geometry.x)  # not ended here
            lanes = lane_neighbors(geometry.x, members, road.ring_length)
            if members_behind is not None:
                behind = lane_neighbors(geometry.x, members_behind, road.ring_length)
                lanes = lanes._replace(behind=behind.behind, has_behind=behind.has_behind)
            move = _judge(drivers, geometry, dt, params, lanes, lane, target, direction)
            return possible & move.safe & (move.gain > 0), move.gain, target

        left, left_gain, left_target = judge(1, intent)
        right, right_gain, right_target = judge(-1, intent)
        left = left & (~right | (left_gain >= right_gain))
        right = right & ~left
        if not torch.compiler.is_compiling() and not bool((left | right).any()):
            return torch.zeros_like(lane)  # nobody moves: most steps
        # Judged again as if the drivers decided one after another, moves to the left before
        # moves to the right and, within a direction, front to back: each sees the moves
        # decided before its own in place (ahead of it, and for moves to the right the moves
        # to the left behind it too), and is dropped if it no longer passes.
        entering_left = intent | _lane_mask(left_target, road, left)
        entering = entering_left | _lane_mask(right_target, road, right)
        left = left & judge(1, entering_left, intent)[0]
        right = right & judge(-1, entering, entering_left)[0]
        return left.long() - right.long()


def with_target_lanes(occupancy: Tensor, state: TrafficState, road: Road, params: MOBIL) -> Tensor:
    """``[B, N, L]`` lane membership ``occupancy`` of ``state`` with every human driver that is
    changing lane (MOBIL enabled, heading not 0) also a member of the lane it moves to, from
    the first step of its change: its new followers react to it at once, as they would to a
    car that signals and noses in, rather than only once its body crosses the lane line."""
    return occupancy | _lane_mask(_target_lane(state, road), road, changing_lane(state, params))


def changing_lane(state: TrafficState, params: MOBIL) -> Tensor:
    """``[B, N]`` bool: human drivers with lane changes enabled that are changing lane (a
    non-zero heading)."""
    return state.active & ~state.is_av & params.enabled & (state.heading != 0)


def _lane_mask(lane: Tensor, road: Road, where: Tensor) -> Tensor:
    """``[B, N, L]`` bool: lane ``lane [B, N]`` of the vehicles ``where`` is True."""
    lanes = torch.arange(road.num_lanes, device=lane.device)
    return (lane.unsqueeze(-1) == lanes) & where.unsqueeze(-1)


CENTRE_TOLERANCE = 1e-4
"""Lane widths within which ``y`` counts as on a lane's centre when the next centre beyond it is
sought (0.4 mm of a 4 m lane): ``y / lane_width - 0.5`` of a car exactly on a centre rounds to
either side of the integer for some lane widths (3.7 m, lane 1), which made a change started
there target its own lane and end at once."""


def _target_centre(y: Tensor, side: Tensor, road: Road) -> Tensor:
    """``[B, N]`` centre ``y`` (m) of the lane next beyond ``y`` on ``side`` (``[B, N]``, the sign
    of the heading: 1 to the left, -1 to the right), within the road; a ``y`` within
    :data:`CENTRE_TOLERANCE` of a centre counts as on it."""
    position = y / road.lane_width - 0.5
    lane = torch.where(
        side > 0,
        torch.floor(position + CENTRE_TOLERANCE) + 1,
        torch.ceil(position - CENTRE_TOLERANCE) - 1,
    )
    return road.lane_center(lane.clamp(0, road.num_lanes - 1))


def _target_lane(state: TrafficState, road: Road) -> Tensor:
    """``[B, N]`` long: the lane a vehicle changing lane moves to (see :func:`_target_centre`)."""
    centre = _target_centre(state.y.detach(), torch.sign(state.heading.detach()), road)
    return road.nearest_lane(centre)


def start_lane_changes(state: TrafficState, road: Road, params: MOBIL, direction: Tensor) -> Tensor:
    """``[B, N]`` heading (rad) of human drivers after starting the changes ``direction``
    (from :func:`mobil_directions`): ``direction * theta`` where a change starts, unchanged
    elsewhere. ``theta`` is computed from detached values: a constant for the gradient."""
    v = state.v.detach()
    sine = road.lane_width / (_detached(params.duration) * v)
    theta = torch.asin(sine.clamp(max=1.0))
    widest = steepest_turn(state.length.detach(), state.width.detach(), road.lane_width)
    return torch.where(direction != 0, direction * torch.minimum(theta, widest), state.heading)


def _detached(value: Scalar) -> Scalar:
    return value.detach() if isinstance(value, Tensor) else value


def steepest_turn(length: Tensor, width: Tensor, lane_width: float) -> Tensor:
    """``[B, N]`` the largest heading (rad) a car can turn to from its lane centre with its body's
    bounding box still inside its lane: its front bumper is its reference point, so its rear
    swings out to the other side, ``length sin(theta) + width cos(theta) / 2 <= lane_width / 2``
    (0.21 rad for a 5 x 2 m car in a 4 m lane); at most :data:`MAX_LANE_CHANGE_ANGLE`, and
    0.05 rad for a car too wide for the rule."""
    reach = torch.sqrt(length**2 + (width / 2) ** 2)
    fits = (lane_width / 2 / reach).clamp(max=1.0)
    theta = torch.asin(fits) - torch.atan2(width / 2, length)
    return theta.clamp(0.05, MAX_LANE_CHANGE_ANGLE)


def finish_lane_changes(
    y_before: Tensor,
    y_after: Tensor,
    heading: Tensor,
    changing: Tensor,
    road: Road,
) -> tuple[Tensor, Tensor]:
    """``(y, heading)`` of vehicles after a step in which those ``changing`` moved laterally from
    ``y_before`` to ``y_after`` (m) with ``heading`` (rad): those that reached or passed their
    target lane's centre are put on it with heading 0. Shapes ``[B, N]``."""
    side = torch.sign(heading.detach())
    centre = _target_centre(y_before.detach(), side, road)
    arrived = changing & (side * (y_after.detach() - centre) >= 0)
    y = torch.where(arrived, centre.to(y_after.dtype), y_after)
    return y, torch.where(arrived, torch.zeros_like(heading), heading)
