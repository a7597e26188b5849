"""One simulation step for all worlds: a car-following model for humans (the IDM, Krauss or a mix),
a kinematic bicycle for autonomous vehicles.

All vehicles are updated synchronously from the state at time ``t`` with the semi-implicit
(symplectic) Euler scheme that SUMO uses by default::

    v' = max(0, v + acc dt)        x' = x + v' cos(h') dt        y' = y + v' sin(h') dt

Autonomous vehicles can instead move by highway-env's bicycle, the GI-PPO authors' pace car
(``step(..., av_kinematics="highway_env")``, :func:`centre_slip_bicycle`).

What the gradient carries: every continuous quantity of a later state (positions, speeds,
headings, gaps, rewards built from them) is differentiable with respect to the actions, the
initial state and the driver parameters through the car-following model, the bicycle model and
the integration (:mod:`difftraffic.krauss` says what its discrete choices do not carry).
Which vehicle leads which (lane membership and order) is discrete and carries no gradient: when a
vehicle moves laterally into another lane, the followers that start reacting to it do so through
a gap whose *value* depends on the mover's ``x``, but nothing tells the gradient that the change of
leader itself was caused by the mover's ``y``. The ``max(0, .)`` on speed passes no gradient to a
vehicle held at standstill.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple, cast, get_args

import torch
from torch import Tensor

from difftraffic import fused
from difftraffic.car_following import Drivers
from difftraffic.errors import (
    check_choice,
    check_finite,
    check_positive,
    check_range,
    check_simulation_dtype,
)
from difftraffic.idm import IDMParams
from difftraffic.lane_change import (
    DETERMINISTIC_DRIVERS_ONLY,
    MOBIL,
    changing_lane,
    finish_lane_changes,
    mobil_directions,
    start_lane_changes,
    with_target_lanes,
)
from difftraffic.neighbors import (
    LeaderMethod,
    Neighbors,
    box_collisions,
    box_occupancy,
    compute_neighbors,
    find_leaders,
    lane_end_ahead,
    lane_occupancy,
    leader_gap_and_speed,
    swept_collisions,
)
from difftraffic.road import Road
from difftraffic.soft_lane_change import soft_lateral_speed
from difftraffic.soft_lanes import SoftLanes, lane_leaders, mixed_by_lane
from difftraffic.state import BodyBox, TrafficState

StepPath = Literal["auto", "eager", "fused"]

AVKinematics = Literal["rear_axle", "highway_env"]
AV_KINEMATICS: tuple[str, ...] = get_args(AVKinematics)
"""The autonomous vehicles' motion models (:func:`step`'s ``av_kinematics``)."""

MIN_GAP = 1e-2
"""Gap (m) at which the car-following model is evaluated when a vehicle overlaps its leader (the IDM
is undefined for gaps <= 0); such vehicles are reported as collided and brake as hard as the
model allows."""


class StepResult(NamedTuple):
    """What :func:`step` returns.

    Attributes:
        state: the state at ``t + dt``.
        neighbors: leader relations of the new state (pass them to the next :func:`step`).
        collided: ``[B, N]`` bool, vehicles overlapping their leader along the road in the new
            state, or that went through another vehicle of a shared lane during the step (a
            swept test, so nothing passes through a car unflagged at any speed), and those
            others; see :func:`difftraffic.neighbors.box_collisions` and
            :func:`difftraffic.neighbors.swept_collisions`.
        acceleration: ``[B, N]`` acceleration applied during the step (m/s^2).
    """

    state: TrafficState
    neighbors: Neighbors
    collided: Tensor
    acceleration: Tensor


def bicycle_yaw_rate(v: Tensor, steering: Tensor, wheelbase: Tensor) -> Tensor:
    """Kinematic bicycle yaw rate (rad/s): ``v tan(steering) / wheelbase``; shapes ``[B, N]``."""
    return v * torch.tan(steering) / wheelbase


class Motion(NamedTuple):
    """One step of a vehicle model: speed (m/s) and heading (rad) after it, and the move
    ``(dx, dy)`` (m) during it; shapes ``[B, N]``."""

    v: Tensor
    heading: Tensor
    dx: Tensor
    dy: Tensor


def centre_slip_bicycle(
    v: Tensor, heading: Tensor, acceleration: Tensor, steering: Tensor, length: Tensor, dt: float
) -> Motion:
    """highway-env's kinematic bicycle (``highway_env.vehicle.kinematics.Vehicle.step``), the
    GI-PPO authors' pace car: the reference point is the body's centre, half a length from each
    axle, so the car moves at the slip angle ``beta = atan(tan(steering) / 2)`` off its heading
    and turns at ``v sin(beta) / (length / 2)``; explicit Euler (the move and the turn use the
    speed and heading at the start of the step). Speeds stay ``>= 0`` (highway-env lets a car
    reverse; a :class:`~difftraffic.TrafficState` holds speeds along the heading).

    Args:
        v, heading: ``[B, N]`` speed (m/s) and heading (rad) at the start of the step.
        acceleration, steering: ``[B, N]`` (m/s^2, rad in ``(-pi/2, pi/2)``).
        length: ``[B, N]`` body length (m), the wheelbase.
        dt: time step (s).
    """
    slip = torch.atan(0.5 * torch.tan(steering))
    direction = heading + slip
    return Motion(
        v=torch.relu(v + acceleration * dt),
        heading=heading + v * torch.sin(slip) / (0.5 * length) * dt,
        dx=v * torch.cos(direction) * dt,
        dy=v * torch.sin(direction) * dt,
    )


def validate_step_inputs(
    state: TrafficState,
    road: Road,
    drivers: Drivers,
    dt: float,
    av_acceleration: Tensor | None = None,
    av_steering: Tensor | None = None,
    generator: torch.Generator | None = None,
    lane_changes: MOBIL | None = None,
) -> None:
    """The checked mode of :func:`step`: raise ``ValueError`` naming the first bad argument.

    Checks what :func:`step` assumes and does not verify: a valid state in float32 or float64,
    ``dt > 0``, controls of the state's shape ``[B, N]``, dtype and device (a float64 control
    would silently turn a float32 simulation into float64), finite, with AV steering in
    ``(-pi/2, pi/2)`` rad, driver parameters broadcastable to ``[B, N]`` in the state's
    dtype, and a generator where the drivers draw random numbers. Costs a few device syncs;
    call it once before a loop, or on every step while debugging.
    """
    if not isinstance(road, Road):
        raise ValueError(f"road must be a difftraffic.Road, got {type(road).__name__}")
    state.validate()
    check_simulation_dtype("the state's dtype", state.x.dtype)
    check_positive("dt", dt, "s")
    shape, dtype, device = state.x.shape, state.x.dtype, state.x.device
    for name, control in (("av_acceleration", av_acceleration), ("av_steering", av_steering)):
        if control is None:
            continue
        if not isinstance(control, Tensor):
            raise ValueError(
                f"{name} must be a tensor of shape {tuple(shape)}, got {type(control).__name__}"
            )
        if control.shape != shape or control.dtype != dtype or control.device != device:
            raise ValueError(
                f"{name} must match the state: shape {tuple(shape)} [B, N], dtype {dtype}, "
                f"device {device}; got {tuple(control.shape)}, {control.dtype}, {control.device}"
            )
        check_finite(name, control)
    if av_steering is not None:
        check_range(
            "av_steering",
            av_steering[state.is_av],
            -math.pi / 2,
            math.pi / 2,
            low_inclusive=False,
            high_inclusive=False,
            unit="rad",
        )
    _check_per_vehicle(type(drivers).__name__, drivers.tensors(), state)
    if lane_changes is not None:
        if not isinstance(lane_changes, MOBIL):
            raise ValueError(
                "lane_changes must be a difftraffic.MOBIL or None, got "
                f"{type(lane_changes).__name__}"
            )
        _check_per_vehicle("MOBIL", lane_changes.tensors(), state)
        if drivers.needs_generator:
            raise ValueError(DETERMINISTIC_DRIVERS_ONLY)
    if drivers.needs_generator and generator is None:
        raise ValueError(
            f"{type(drivers).__name__} draws random numbers (a Krauss sigma > 0): pass "
            "generator=, a seeded "
            "torch.Generator"
        )


def _check_per_vehicle(owner: str, values: dict[str, Any], state: TrafficState) -> None:
    """Raise ``ValueError`` unless every tensor of ``values`` broadcasts to the state's
    ``[B, N]``, on its device, floating ones in its dtype."""
    shape, dtype, device = state.x.shape, state.x.dtype, state.x.device
    for name, value in values.items():
        if not isinstance(value, Tensor):
            continue
        if not _broadcasts_to(value.shape, shape):
            raise ValueError(
                f"{owner}.{name} has shape {tuple(value.shape)}, not "
                f"broadcastable to the state's {tuple(shape)} [B, N]"
            )
        wrong_dtype = value.is_floating_point() and value.dtype != dtype
        if wrong_dtype or value.device != device:
            raise ValueError(
                f"{owner}.{name} must have the state's dtype {dtype} and device "
                f"{device}, got {value.dtype} on {value.device}"
            )


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``target`` without growing it."""
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(reversed(shape), reversed(target), strict=False))


def step(
    state: TrafficState,
    road: Road,
    drivers: Drivers,
    dt: float,
    av_acceleration: Tensor | None = None,
    av_steering: Tensor | None = None,
    neighbors: Neighbors | None = None,
    wheelbase_ratio: float = 0.6,
    leader_method: LeaderMethod = "auto",
    generator: torch.Generator | None = None,
    path: StepPath = "auto",
    lane_changes: MOBIL | None = None,
    soft_lanes: SoftLanes | None = None,
    av_kinematics: AVKinematics = "rear_axle",
) -> StepResult:
    """Advance every world by ``dt`` seconds.

    Args:
        state: the state at time ``t``; shapes ``[B, N]``.
        road: road geometry.
        drivers: the human drivers' car-following model and parameters, broadcastable to
            ``[B, N]``: :class:`difftraffic.IDMParams`, :class:`difftraffic.KraussParams` or a
            :class:`difftraffic.MixedDrivers`.
        dt: time step (s), > 0.
        av_acceleration: ``[B, N]`` longitudinal acceleration of autonomous vehicles (m/s^2);
            entries of human drivers are ignored (and get zero gradient). ``None``: zero.
        av_steering: ``[B, N]`` front-wheel steering angle of autonomous vehicles (rad), in
            ``(-pi/2, pi/2)``; human entries ignored. ``None``: zero.
        neighbors: leader relations of ``state`` if already known (``StepResult.neighbors`` of
            the previous step); computed when ``None``.
        wheelbase_ratio: wheelbase of autonomous vehicles as a fraction of their length.
        leader_method: see :func:`difftraffic.neighbors.find_leaders`.
        generator: the source of the drivers' random draws (Krauss dawdling, ``sigma > 0``);
            unused by deterministic drivers.
        path: ``"eager"`` (torch operations: any device, any drivers, derivatives of any
            order; the reference), ``"fused"`` (one compiled pass per world with a
            hand-written backward, :mod:`difftraffic.fused`: CPU or CUDA, IDM drivers, first
            derivatives; ``ValueError`` saying why where it cannot run) or ``"auto"``: fused
            where it can run and is built (on CUDA, for worlds of up to
            :data:`difftraffic.fused.CUDA_AUTO_MAX_VEHICLES` slots), eager otherwise. The
            two agree to the rounding of the maths library, gradients included;
            ``leader_method`` applies to eager only.
        lane_changes: MOBIL lane changes of the human drivers it enables
            (:class:`difftraffic.lane_change.MOBIL`, parameters broadcastable to ``[B, N]`` in
            the state's dtype, e.g. :meth:`difftraffic.Scenario.lane_changes`); ``None``
            (default): humans keep their lanes. Fused where the step can be (IDM drivers, no
            lane ends), the decisions and lateral motion in the same pass. With ``soft_lanes``,
            MOBIL is a smooth choice of lateral speed (:mod:`difftraffic.soft_lane_change`:
            gradients reach its parameters and every car's state; no lane ends).
        soft_lanes: smooth lane membership and leader selection for the humans' car
            following (:class:`difftraffic.SoftLanes`), so that lateral positions (an AV's
            steering) have true gradients; ``None`` (default): the road's discrete rule.
            Runs on the eager path. Leaders for the collision test stay discrete.
        av_kinematics: the autonomous vehicles' motion: ``"rear_axle"`` (default; a kinematic
            bicycle about the rear axle, wheelbase ``wheelbase_ratio`` lengths, integrated like
            the humans, see the module docstring) or ``"highway_env"`` (highway-env's bicycle
            about the body's centre, the GI-PPO authors' pace car:
            :func:`centre_slip_bicycle`; ``wheelbase_ratio`` unused). Runs on the eager path.

    Returns:
        A :class:`StepResult`. Inactive slots are returned unchanged.

    This function performs no input validation so that it stays cheap and compilable; the
    environment and the scenario builder validate what users pass, and
    :func:`validate_step_inputs` checks the arguments of a hand-written loop.
    """
    if path not in ("auto", "eager", "fused"):
        raise ValueError(f"path must be 'auto', 'eager' or 'fused', got {path!r}")
    check_choice("av_kinematics", av_kinematics, AV_KINEMATICS)
    if path != "eager":
        why_not = _why_not_fused(state, road, drivers, lane_changes, soft_lanes, av_kinematics)
        if not why_not and not (path == "auto" and fused.eager_is_faster(state.x)):
            if neighbors is None and lane_changes is not None:
                neighbors = _leaders(state, road, leader_method, lane_changes)
            # _why_not_fused checked that the drivers are IDMParams.
            new_state, acceleration, new_neighbors, collided = fused.fused_step(
                state,
                road,
                cast(IDMParams, drivers),
                dt,
                av_acceleration,
                av_steering,
                neighbors,
                wheelbase_ratio,
                MIN_GAP,
                lane_changes,
            )
            return StepResult(new_state, new_neighbors, collided, acceleration)
        if path == "fused":
            raise ValueError(f"path='fused' cannot run this step: {why_not}")
    return _eager_step(
        state,
        road,
        drivers,
        dt,
        av_acceleration,
        av_steering,
        neighbors,
        wheelbase_ratio,
        leader_method,
        generator,
        lane_changes,
        soft_lanes,
        av_kinematics,
    )


def _check_smooth_lane_changes(road: Road, drivers: Drivers) -> None:
    """MOBIL's smooth choice needs a road without lane ends and deterministic drivers."""
    if road.lane_ends is not None:
        raise ValueError(
            "lane_changes with soft_lanes (MOBIL's smooth choice) needs a road without "
            f"lane_ends, got lane_ends={road.lane_ends}"
        )
    if drivers.needs_generator:
        raise ValueError(DETERMINISTIC_DRIVERS_ONLY)


def _eager_step(
    state: TrafficState,
    road: Road,
    drivers: Drivers,
    dt: float,
    av_acceleration: Tensor | None,
    av_steering: Tensor | None,
    neighbors: Neighbors | None,
    wheelbase_ratio: float,
    leader_method: LeaderMethod,
    generator: torch.Generator | None,
    lane_changes: MOBIL | None,
    soft_lanes: SoftLanes | None,
    av_kinematics: AVKinematics,
) -> StepResult:
    """:func:`step` by torch operations (the reference path)."""
    zeros = torch.zeros_like(state.x)
    av_acceleration = zeros if av_acceleration is None else av_acceleration
    av_steering = zeros if av_steering is None else av_steering
    # with soft lanes MOBIL is a smooth choice of lateral speed; without, discrete changes
    discrete_changes = lane_changes if soft_lanes is None else None
    if soft_lanes is not None and lane_changes is not None:
        _check_smooth_lane_changes(road, drivers)
    if neighbors is None:
        neighbors = _leaders(state, road, leader_method, discrete_changes)
    active, is_av = state.active, state.is_av

    gap, v_lead = leader_gap_and_speed(state, neighbors, road)
    leaving = None
    if discrete_changes is not None:
        leaving = changing_lane(state, discrete_changes)
    car_gap, has_leader = gap, neighbors.has_leader
    leaders = None
    if soft_lanes is not None:  # an empty lane's virtual leader makes everyone a follower
        leaders = lane_leaders(state, road, soft_lanes)
        car_gap = mixed_by_lane(leaders.weights, leaders.lane_gap)
        v_lead = mixed_by_lane(leaders.weights, leaders.lane_speed)
        has_leader = torch.ones_like(has_leader)
    follow_gap, v_lead, has_leader = lane_end_ahead(
        state, road, car_gap, v_lead, has_leader, leaving
    )
    human_acc = drivers.acceleration(
        state.v, v_lead, follow_gap.clamp_min(MIN_GAP), has_leader, dt, generator
    )
    acceleration = torch.where(active, torch.where(is_av, av_acceleration, human_acc), zeros)

    human_heading = state.heading
    lateral_speed = zeros
    if discrete_changes is not None:
        occupancy = lane_occupancy(state, road)  # mobil_directions adds the target lanes
        direction = mobil_directions(state, road, drivers, dt, discrete_changes, occupancy)
        human_heading = start_lane_changes(state, road, discrete_changes, direction)
    elif lane_changes is not None and soft_lanes is not None and leaders is not None:
        lateral_speed = soft_lateral_speed(
            state, road, drivers, dt, lane_changes, soft_lanes, leaders
        )
    v_next = torch.relu(state.v + acceleration * dt)
    yaw_rate = bicycle_yaw_rate(v_next, av_steering, wheelbase_ratio * state.length)
    heading_next = torch.where(is_av & active, state.heading + yaw_rate * dt, human_heading)
    cos_next, sin_next = torch.cos(heading_next), torch.sin(heading_next)
    moved = v_next * cos_next * dt  # along the road, unwrapped (m)
    drift = (v_next * sin_next + lateral_speed) * dt
    if av_kinematics == "highway_env":
        av_motion = centre_slip_bicycle(
            state.v, state.heading, acceleration, av_steering, state.length, dt
        )
        default = Motion(v_next, heading_next, moved, drift)
        av = is_av & active
        v_next, heading_next, moved, drift = (
            torch.where(av, a, d) for a, d in zip(av_motion, default, strict=True)
        )
        cos_next, sin_next = torch.cos(heading_next), torch.sin(heading_next)
    x_next = road.wrap(state.x + moved)
    y_next = state.y + drift
    if discrete_changes is not None:
        changing = changing_lane(state.replace(heading=heading_next), discrete_changes)
        y_next, heading_next = finish_lane_changes(state.y, y_next, heading_next, changing, road)
        cos_next, sin_next = torch.cos(heading_next), torch.sin(heading_next)

    new_state = state.replace(
        x=torch.where(active, x_next, state.x),
        y=torch.where(active, y_next, state.y),
        v=torch.where(active, v_next, state.v),
        heading=heading_next,
    )
    # Leaders and collisions are discrete: find them on detached values, outside autograd, and
    # reuse the cosine and sine of the new heading for the new bodies.
    with torch.no_grad():
        x, y = new_state.x, new_state.y
        new_box = BodyBox.of(x, y, state.length, state.width, cos_next, sin_next)
        occupancy = box_occupancy(new_box, active, road)
        if discrete_changes is not None:
            occupancy = with_target_lanes(occupancy, new_state, road, discrete_changes)
        new_neighbors = find_leaders(x, occupancy, road.ring_length, leader_method)
        collided = box_collisions(x, new_box, new_neighbors, road.ring_length) | swept_collisions(
            state, gap, torch.where(active, moved, zeros), neighbors, occupancy, road
        )
    return StepResult(new_state, new_neighbors, collided, acceleration)


def _leaders(
    state: TrafficState, road: Road, method: LeaderMethod, lane_changes: MOBIL | None
) -> Neighbors:
    """Leaders of ``state``; with lane changes, drivers changing lane lead in their target lane
    too (:func:`difftraffic.lane_change.with_target_lanes`)."""
    if lane_changes is None:
        return compute_neighbors(state, road, method)
    occupancy = with_target_lanes(lane_occupancy(state, road), state, road, lane_changes)
    return find_leaders(state.x, occupancy, road.ring_length, method)


def _why_not_fused(
    state: TrafficState,
    road: Road,
    drivers: Drivers,
    lane_changes: MOBIL | None,
    soft_lanes: SoftLanes | None,
    av_kinematics: AVKinematics,
) -> str:
    """Why the fused step cannot run these inputs ('' when it can)."""
    if av_kinematics != "rear_axle":
        return f"av_kinematics={av_kinematics!r} runs on the eager step"
    if soft_lanes is not None:
        return "soft lanes run on the eager step"
    if road.lane_ends is not None:
        return "roads with lane ends run on the eager step"
    if torch.compiler.is_compiling():
        return "torch.compile traces the eager step"
    x = state.x
    if not (x.is_cpu or x.is_cuda):
        return f"it runs on the CPU or CUDA, the state is on {x.device}"
    if not isinstance(drivers, IDMParams):
        return f"it runs IDM drivers only, got {type(drivers).__name__}"
    floats = (state.y, state.v, state.heading, state.length, state.width)
    # get_device() (-1 on the CPU) and dtype identity: this runs every step, and device objects
    # cost microseconds.
    device = x.get_device()
    if any(t.dtype is not x.dtype or t.get_device() != device for t in floats):
        return "the state's float fields differ in dtype or device (see TrafficState.validate)"
    kind = "cpu" if device < 0 else "cuda"
    if not fused.available(kind):
        return fused.unavailable_reason(kind)
    return ""


def rollout(
    state: TrafficState,
    road: Road,
    drivers: Drivers,
    dt: float,
    steps: int,
    av_acceleration: Tensor | None = None,
    av_steering: Tensor | None = None,
    leader_method: LeaderMethod = "auto",
    generator: torch.Generator | None = None,
    path: StepPath = "auto",
    lane_changes: MOBIL | None = None,
    soft_lanes: SoftLanes | None = None,
    av_kinematics: AVKinematics = "rear_axle",
) -> tuple[list[TrafficState], Tensor]:
    """Run ``steps`` steps with per-step AV controls.

    Args:
        av_acceleration, av_steering: ``[T, B, N]`` controls per step (or ``None`` for zero).
        path, lane_changes, soft_lanes, av_kinematics: see :func:`step`.

    Returns:
        ``(states, collided)``: the ``T + 1`` states from the initial one, and ``[T, B, N]``
        collision flags of states ``1..T``.
    """
    states = [state]
    collisions = []
    neighbors = None
    for t in range(steps):
        acc = None if av_acceleration is None else av_acceleration[t]
        steer = None if av_steering is None else av_steering[t]
        result = step(
            states[-1],
            road,
            drivers,
            dt,
            acc,
            steer,
            neighbors,
            leader_method=leader_method,
            generator=generator,
            path=path,
            lane_changes=lane_changes,
            soft_lanes=soft_lanes,
            av_kinematics=av_kinematics,
        )
        states.append(result.state)
        neighbors = result.neighbors
        collisions.append(result.collided)
    if not collisions:
        return states, torch.zeros(0, *state.x.shape, dtype=torch.bool, device=state.x.device)
    return states, torch.stack(collisions)
