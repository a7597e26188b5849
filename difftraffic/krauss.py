"""SUMO's default car-following model, the Krauss model, as a pure tensor function.

The form is SUMO's ``Krauss`` with its default semi-implicit Euler update (Krauss 1998, as
modified in SUMO): each step the driver picks the highest speed that lets it stop behind its
leader should the leader brake as hard as the driver can, reacting after ``T`` seconds, on the
discrete time grid of step ``dt``::

    v_safe   = the largest v' with which, braking by b dt a step after a reaction time T, the car
               stops within gap - s0 + (the leader's braking distance on the same grid)
    v_plan   = min(v_safe, v + a dt, max(v0, v - b dt))
    v_min    = min(max(0, v - b dt), max(v_plan, v - b_emergency dt))
    v'       = max(v_min, dawdle(max(v_min, v_plan)))

where braking harder than ``b`` is allowed only when ``v_safe`` demands it (then at SUMO's
"emergency" rate: 1.2 times the deceleration that avoids the collision, at least ``b``, at most
``b_emergency``), and dawdling removes a random ``sigma a r dt`` (``r`` uniform in [0, 1), drawn
from the caller's generator; ``sigma v r dt`` while ``v < a`` in m/s against m/s^2, SUMO's rule).

The acceleration returned is ``(v' - v) / dt``, so :func:`difftraffic.step`'s integration
``v + acc dt`` reproduces ``v'``. SUMO uses the larger of the follower's and the leader's
deceleration to estimate the leader's braking distance; here it is the follower's own ``b``
(identical when drivers share ``b``, the case of every recorded comparison).

What the gradient carries: ``v'`` is piecewise smooth in the speeds, the gap and every parameter;
the number of braking steps (a floor) and the choice among the bounds are discrete and pass no
gradient, and a driver held at a bound (``v0``, ``v + a dt``, standstill) gets the gradient of that
bound only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from difftraffic.car_following import CarFollowingModel, Parameter, Scalar, register

NUMERICAL_EPS = 1e-3
"""SUMO's slack (m, m/s^2): stopping distances are shortened by it and braking must exceed ``b``
by it before the emergency rule applies."""
EMERGENCY_DECEL_AMPLIFIER = 1.2
"""SUMO brakes this much harder than the bare collision-avoiding deceleration in an emergency."""


@register
@dataclass(frozen=True)
class KraussParams(CarFollowingModel):
    """Krauss driver parameters: floats or tensors broadcastable to ``[B, N]``.

    Attributes:
        v0: desired speed (m/s), > 0 (SUMO: ``min(maxSpeed, lane speed x speedFactor)``).
        T: reaction time / time headway (s), > 0 (SUMO's ``tau``).
        a: maximum acceleration (m/s^2), > 0 (``accel``).
        b: maximum comfortable deceleration (m/s^2), > 0 (``decel``).
        s0: minimum gap kept at standstill (m), >= 0 (``minGap``).
        sigma: driver imperfection in [0, 1] (``sigma``); 0 is deterministic. SUMO's default is
            0.5; here it is 0, so that rollouts are deterministic unless asked otherwise.
        b_emergency: the hardest deceleration (m/s^2), > 0 (``emergencyDecel``).

    Other defaults are SUMO's passenger car.
    """

    NAME: ClassVar[str] = "krauss"
    PARAMETERS: ClassVar[Mapping[str, Parameter]] = {
        "v0": Parameter("m/s", search=(1.0, 70.0)),
        "T": Parameter("s", search=(0.1, 5.0)),
        "a": Parameter("m/s^2", search=(0.1, 10.0)),
        "b": Parameter("m/s^2", search=(0.1, 10.0)),
        "s0": Parameter("m", low_inclusive=True, search=(0.0, 10.0)),
        "sigma": Parameter("", low_inclusive=True, high=1.0),
        "b_emergency": Parameter("m/s^2"),
    }
    SPEED_CAP: ClassVar[str | None] = "v0"

    v0: Scalar
    T: Scalar = 1.0
    a: Scalar = 2.6
    b: Scalar = 4.5
    s0: Scalar = 2.5
    sigma: Scalar = 0.0
    b_emergency: Scalar = 9.0

    def __post_init__(self) -> None:
        super().__post_init__()
        # Decided once here (a device sync), not at every step.
        object.__setattr__(self, "_dawdles", bool((torch.as_tensor(self.sigma) > 0).any()))

    @property
    def needs_generator(self) -> bool:
        return bool(self.__dict__["_dawdles"])

    def acceleration(
        self,
        v: Tensor,
        v_lead: Tensor,
        gap: Tensor,
        has_leader: Tensor | None,
        dt: float,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``(krauss_speed(...) - v) / dt``; see :func:`krauss_speed`."""
        return (krauss_speed(v, v_lead, gap, self, dt, has_leader, generator) - v) / dt


def braking_distance(v: Tensor, b: Scalar, dt: float) -> Tensor:
    """Distance (m) covered from speed ``v`` braking by ``b dt`` each step of ``dt`` until the
    speed would go below zero (SUMO's Euler brake gap), shapes ``[B, N]``."""
    decrement = b * dt
    steps = torch.floor(v / decrement)
    return dt * (steps * v - decrement * steps * (steps + 1) / 2)


def safe_stopping_speed(distance: Tensor, params: KraussParams, dt: float) -> Tensor:
    """The largest speed (m/s) from which a driver reacting after ``T`` and braking by ``b dt``
    per step stops within ``distance`` (m), on the grid of ``dt``; 0 for ``distance < 0.001 m``."""
    g = distance - NUMERICAL_EPS
    reachable = g >= 0
    g = torch.where(reachable, g, torch.ones_like(g))
    decrement = params.b * dt
    t = params.T
    root = torch.sqrt(dt * dt + 4.0 * (dt * (2.0 * g / decrement - t) + t * t))
    steps = torch.floor(0.5 - (t - 0.5 * root) / dt)
    covered = 0.5 * steps * (steps - 1) * decrement * dt + steps * decrement * t
    speed = steps * decrement + (g - covered) / (steps * dt + t)
    return torch.where(reachable, speed, torch.zeros_like(speed))


def _emergency_deceleration(gap: Tensor, v: Tensor, v_lead: Tensor, b: Scalar) -> Tensor:
    """SUMO's collision-avoiding deceleration (m/s^2) when ``b`` is not enough, ``[B, N]``."""
    reach = gap + 0.5 * v_lead * v_lead / b
    safe_reach = torch.where(reach > 0, reach, torch.ones_like(reach))
    within_b = 0.5 * v * v / safe_reach
    safe_gap = torch.where(gap > 0, gap, torch.ones_like(gap))
    beyond_b = 0.5 * (v * v - v_lead * v_lead) / safe_gap
    # A gap of 0 or less: SUMO returns a negative number here, so its caller falls back to b.
    beyond_b = torch.where(gap > 0, beyond_b, torch.zeros_like(beyond_b))
    return torch.where((reach > 0) & (within_b <= b), within_b, beyond_b)


def safe_following_speed(
    v: Tensor, v_lead: Tensor, gap: Tensor, params: KraussParams, dt: float
) -> Tensor:
    """SUMO's ``maximumSafeFollowSpeed`` (m/s): the safe speed behind a leader ``gap`` metres
    (bumper to bumper) ahead driving at ``v_lead``, with the emergency correction; ``[B, N]``."""
    clearance = gap - params.s0
    safe = safe_stopping_speed(clearance + braking_distance(v_lead, params.b, dt), params, dt)
    wanted = (v - safe) / dt
    emergency = EMERGENCY_DECEL_AMPLIFIER * _emergency_deceleration(clearance, v, v_lead, params.b)
    emergency = torch.minimum(torch.maximum(emergency, torch.as_tensor(params.b)), wanted)
    corrected = torch.relu(v - emergency * dt)
    needed = (wanted > params.b + NUMERICAL_EPS) & torch.as_tensor(params.b != params.b_emergency)
    return torch.where(needed, corrected, safe)


def krauss_speed(
    v: Tensor,
    v_lead: Tensor,
    gap: Tensor,
    params: KraussParams,
    dt: float,
    has_leader: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The Krauss driver's speed (m/s) after one step of ``dt`` seconds.

    Args:
        v: ``[B, N]`` own speed (m/s), >= 0.
        v_lead: ``[B, N]`` the leader's speed (m/s); ignored where there is no leader.
        gap: ``[B, N]`` bumper-to-bumper gap (m); ignored where there is no leader.
        params: driver parameters broadcastable to ``[B, N]``.
        dt: the step (s), > 0.
        has_leader: ``[B, N]`` bool; ``None`` means every vehicle has a leader.
        generator: the source of the dawdling draws; required when any ``sigma > 0``.

    Returns:
        ``[B, N]`` next speed, >= 0.
    """
    if has_leader is not None:
        # Harmless inputs where there is no leader, so that neither branch of a `where` makes
        # inf or NaN (autograd differentiates both).
        gap = torch.where(has_leader, gap, torch.full_like(gap, 1e3))
        v_lead = torch.where(has_leader, v_lead, v)
    safe = safe_following_speed(v, v_lead, gap, params, dt)
    if has_leader is not None:
        safe = torch.where(has_leader, safe, torch.full_like(safe, torch.inf))
    # Speed limits are not emergencies (SUMO): above v0 the driver slows by at most b dt.
    limit = torch.maximum(torch.as_tensor(params.v0), v - params.b * dt)
    planned = torch.minimum(torch.minimum(safe, v + params.a * dt), limit)
    slowest = torch.minimum(
        torch.relu(v - params.b * dt),
        torch.maximum(planned, torch.relu(v - params.b_emergency * dt)),
    )
    fastest = torch.maximum(slowest, planned)
    if params.needs_generator:
        if generator is None:
            raise ValueError(
                "KraussParams.sigma > 0 makes drivers dawdle at random: pass a seeded "
                "torch.Generator (step(..., generator=...))"
            )
        draw = torch.rand(v.shape, generator=generator, dtype=v.dtype, device=v.device)
        rate = torch.where(fastest < params.a, fastest, torch.as_tensor(params.a, dtype=v.dtype))
        fastest = torch.maximum(slowest, torch.relu(fastest - params.sigma * rate * draw * dt))
    return fastest
