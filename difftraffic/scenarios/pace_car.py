"""The pace-car family (GI-PPO appendix 7.5.2): one autonomous car must hold IDM drivers to a speed.

Vehicle slots: slot 0 is the pace car, slots ``1 + lane * humans_per_lane + k`` the humans, lane
by lane, rearmost first. Humans start at rest at ``x = 0, 10, 20, ...`` m in every lane; the pace
car starts at rest in a uniformly random lane, ``pace_car_lead`` (50 m) ahead of that lane's
frontmost human.

Observation layout (``[B, 4 N]`` for ``N = 1 + humans`` vehicles, vehicle by vehicle):

* slot 0 (pace car): ``(y - road_width / 2, heading, vx, vy)``: its lateral position from the
  road's centre line (m), heading (rad), velocity (m/s);
* slot ``i >= 1`` (human): ``(x_i - x_pc, y_i - y_pc, vx_i, vy_i)``: position relative to the
  pace car (m) and velocity (m/s).

Action ``[B, 2]`` in ``[-1, 1]``: ``(acceleration, steering)``, clipped to that range (the
environment's definition; gradients do not flow through the clipped part) and scaled to
``max_acceleration`` and ``max_steering``.

Reward per step: ``1 - mean_i min(|v_i - v_target| / v_target, 1)`` over humans, or -1 on the
step that ends the episode because the pace car collided with a human, left the road (more than
``max_lane_offset`` from every lane centre), is more than ``max_distance_to_humans`` from the
nearest human, or fell behind any human.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor

from difftraffic.car_following import Drivers
from difftraffic.dynamics import AV_KINEMATICS, AVKinematics
from difftraffic.errors import check_choice, check_count, check_positive
from difftraffic.road import LaneMembership, Road, check_lane_membership
from difftraffic.scenario import (
    Driver,
    DriverSettings,
    Scenario,
    ScenarioBuilder,
    check_placement,
)
from difftraffic.soft_lanes import SoftLanes
from difftraffic.state import TrafficState

PACE_CAR_VARIANTS: dict[str, tuple[int, int]] = {
    "1lane": (1, 1),
    "2lane": (2, 2),
    "3lane": (3, 3),
    "4lane": (4, 4),
    "10lane": (10, 1),
}
"""Variant name -> (number of lanes, human drivers per lane), as in the paper."""

PAPER_DRIVER = Driver(v0=20.0, T=0.4, a=35.0, b=25.0, delta=4.0, s0=1.5)
"""The IDM parameters of the paper's traffic experiments."""


@dataclass(frozen=True)
class PaceCarConfig:
    """Settings of a pace-car scenario; defaults are the paper's (SI units).

    ``lane_membership`` is the road's lane-membership rule (:class:`difftraffic.Road`):
    ``"body"`` (default; the pace car blocks every lane its body overlaps) or ``"center"`` (the
    GI-PPO authors' simulator: it blocks, and collides in, only the lane of its nearest centre).
    ``soft_lanes`` (with ``"center"`` only) makes the humans' car following use the smooth
    version of that rule (:class:`difftraffic.SoftLanes`, default scales), so the pace car's
    steering has a true gradient; collisions stay the discrete rule's. ``av_kinematics`` is the
    pace car's motion model (:func:`difftraffic.step`): ``"rear_axle"`` (default) or
    ``"highway_env"`` (the GI-PPO authors' simulator: highway-env's bicycle about the body's
    centre).
    """

    num_lanes: int = 1
    humans_per_lane: int = 1
    lane_width: float = 4.0
    speed_limit: float = 20.0
    target_speed: float = 10.0
    dt: float = 0.03
    max_episode_steps: int = 1000
    max_acceleration: float = 8.0
    max_steering: float = math.radians(20.0)
    human_spacing: float = 10.0
    pace_car_lead: float = 50.0
    max_lane_offset: float = 2.0
    max_distance_to_humans: float = 100.0
    vehicle_length: float = 5.0
    vehicle_width: float = 2.0
    driver: DriverSettings = field(default_factory=lambda: PAPER_DRIVER)
    lane_membership: LaneMembership = "body"
    soft_lanes: bool = False
    av_kinematics: AVKinematics = "rear_axle"

    def __post_init__(self) -> None:
        for name in ("num_lanes", "humans_per_lane", "max_episode_steps"):
            check_count(f"PaceCarConfig.{name}", getattr(self, name), 1)
        for name in (
            "target_speed", "dt", "max_acceleration", "max_steering", "human_spacing",
            "pace_car_lead", "max_lane_offset", "max_distance_to_humans",
        ):  # fmt: skip
            check_positive(f"PaceCarConfig.{name}", getattr(self, name))
        check_lane_membership("PaceCarConfig.lane_membership", self.lane_membership)
        check_choice("PaceCarConfig.av_kinematics", self.av_kinematics, AV_KINEMATICS)
        if not isinstance(self.soft_lanes, bool):
            raise ValueError(f"PaceCarConfig.soft_lanes must be a bool, got {self.soft_lanes!r}")
        if self.soft_lanes and self.lane_membership != "center":
            raise ValueError(
                "PaceCarConfig.soft_lanes smooths the nearest-centre rule: it needs "
                f"lane_membership='center', got {self.lane_membership!r}"
            )
        if self.max_steering >= math.pi / 2:
            raise ValueError(
                f"PaceCarConfig.max_steering must be in (0, pi/2) rad, got {self.max_steering!r}"
            )

    @property
    def num_humans(self) -> int:
        return self.num_lanes * self.humans_per_lane


def pace_car_config(variant: str = "1lane", **overrides: Any) -> PaceCarConfig:
    """The configuration of a named variant (``1lane``, ``2lane``, ``3lane``, ``4lane``,
    ``10lane``), with any :class:`PaceCarConfig` field overridden by keyword."""
    if variant not in PACE_CAR_VARIANTS:
        raise ValueError(
            f"unknown pace-car variant {variant!r}; valid variants: {', '.join(PACE_CAR_VARIANTS)}"
        )
    unknown = sorted(set(overrides) - {f.name for f in fields(PaceCarConfig)})
    if unknown:
        raise ValueError(
            f"unknown PaceCarConfig field(s) {unknown}; valid: "
            f"{', '.join(f.name for f in fields(PaceCarConfig))}"
        )
    lanes, per_lane = PACE_CAR_VARIANTS[variant]
    return replace(PaceCarConfig(num_lanes=lanes, humans_per_lane=per_lane), **overrides)


class PaceCarTask:
    """The pace-car problem as a :class:`difftraffic.env.TrafficTask`.

    Args:
        config: a :class:`PaceCarConfig`, e.g. from :func:`pace_car_config`.
    """

    action_dim = 2

    def __init__(self, config: PaceCarConfig) -> None:
        self.config = config
        self.road = Road.straight(
            config.num_lanes, config.lane_width, config.speed_limit, config.lane_membership
        )
        self.scenario = self._build_scenario()
        self.soft_lanes = SoftLanes() if config.soft_lanes else None
        self.av_kinematics = config.av_kinematics

    @property
    def dt(self) -> float:
        return self.config.dt

    @property
    def max_episode_steps(self) -> int:
        return self.config.max_episode_steps

    @property
    def target_speed(self) -> float:
        """The speed (m/s) the pace car must hold the humans to."""
        return self.config.target_speed

    @property
    def num_vehicles(self) -> int:
        return 1 + self.config.num_humans

    @property
    def obs_dim(self) -> int:
        return 4 * self.num_vehicles

    def _build_scenario(self) -> Scenario:
        cfg = self.config
        builder = ScenarioBuilder(
            self.road, cfg.dt, cfg.vehicle_length, cfg.vehicle_width, driver=cfg.driver
        )
        front = (cfg.humans_per_lane - 1) * cfg.human_spacing
        builder.vehicle(0, front + cfg.pace_car_lead, autonomous=True)
        for lane in range(cfg.num_lanes):
            builder.platoon(lane, cfg.humans_per_lane, spacing=cfg.human_spacing)
        return builder.build()

    def initial(
        self, batch_size: int, generator: torch.Generator, device: torch.device | str | None,
        dtype: torch.dtype,
    ) -> tuple[TrafficState, Drivers]:  # fmt: skip
        """``batch_size`` initial worlds: the pace car in a uniformly random lane."""
        state, drivers = self.scenario.sample(
            batch_size, generator=generator, device=device, dtype=dtype
        )
        lane = torch.randint(
            self.road.num_lanes, (batch_size,), generator=generator, device=generator.device
        ).to(device=state.y.device)
        y = state.y.clone()
        y[:, 0] = self.road.lane_center(lane.to(dtype))
        state = state.replace(y=y)
        check_placement(state, self.road)
        return state, drivers

    def controls(self, state: TrafficState, action: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, 2]`` action -> ``[B, N]`` AV acceleration (m/s^2) and steering (rad)."""
        clipped = action.clamp(-1.0, 1.0)
        pad = (0, state.num_vehicles - 1)
        acceleration = torch.nn.functional.pad(clipped[:, :1] * self.config.max_acceleration, pad)
        steering = torch.nn.functional.pad(clipped[:, 1:2] * self.config.max_steering, pad)
        return acceleration, steering

    def observe(self, state: TrafficState) -> Tensor:
        """``[B, 4 N]`` observation (layout in the module docstring)."""
        vx = state.v * torch.cos(state.heading)
        vy = state.v * torch.sin(state.heading)
        rel_x = state.x - state.x[:, :1]
        rel_y = state.y - state.y[:, :1]
        own = torch.stack(
            [state.y[:, 0] - 0.5 * self.road.width, state.heading[:, 0], vx[:, 0], vy[:, 0]], -1
        )
        others = torch.stack([rel_x[:, 1:], rel_y[:, 1:], vx[:, 1:], vy[:, 1:]], -1)
        return torch.cat([own, others.flatten(1)], dim=1)

    def speed_reward(self, state: TrafficState) -> Tensor:
        """``[B]`` the speed-keeping reward ``1 - mean_i min(|v_i - v_t| / v_t, 1)``."""
        target = self.config.target_speed
        deviation = ((state.v[:, 1:] - target).abs() / target).clamp(max=1.0)
        return 1.0 - deviation.mean(dim=1)

    def termination_reasons(self, state: TrafficState, collided: Tensor) -> dict[str, Tensor]:
        """Each termination condition as a ``[B]`` bool tensor."""
        cfg = self.config
        pace_x, pace_y = state.x[:, :1], state.y[:, :1]
        distance = torch.hypot(state.x[:, 1:] - pace_x, state.y[:, 1:] - pace_y).detach()
        lane_offset = self.road.distance_to_nearest_lane_center(state.y[:, 0]).detach()
        return {
            "collision": collided[:, 0],
            "off_road": lane_offset > cfg.max_lane_offset,
            "too_far": distance.min(dim=1).values > cfg.max_distance_to_humans,
            "fell_behind": (state.x[:, 1:] > pace_x).any(dim=1),
        }

    def evaluate(
        self, state: TrafficState, collided: Tensor
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``(reward [B], terminated [B] bool, reasons)`` for the state reached by a step."""
        reasons = self.termination_reasons(state, collided)
        terminated = torch.stack(list(reasons.values())).any(dim=0)
        reward = self.speed_reward(state)
        reward = torch.where(terminated, torch.full_like(reward, -1.0), reward)
        return reward, terminated, reasons


@dataclass
class WeavingPaceCar:
    """A scripted pace car for :class:`PaceCarEnv`: it cruises at ``cruise_speed`` and weaves
    sinusoidally across the lanes around the road's centre line, in front of the humans.

    Called with observations ``[B, obs_dim]`` (layout in :mod:`difftraffic.scenarios.pace_car`),
    returns actions ``[B, 2]`` in ``[-1, 1]``.

    Attributes:
        dt: time step (s) between calls.
        amplitude: half the lateral sweep (m).
        period: duration (s) of one weave.
        cruise_speed: speed (m/s) held by a proportional controller.
    """

    dt: float
    amplitude: float = 6.0
    period: float = 4.0
    cruise_speed: float = 18.0
    calls: int = 0

    def __call__(self, obs: Tensor) -> Tensor:
        obs = torch.as_tensor(obs)
        lateral, heading, vx, vy = obs[:, 0], obs[:, 1], obs[:, 2], obs[:, 3]
        phase = 2.0 * math.pi * self.calls * self.dt / self.period
        self.calls += 1
        lateral_target = self.amplitude * math.sin(phase)
        heading_target = (0.2 * (lateral_target - lateral)).clamp(-0.3, 0.3)
        steering = (2.5 * (heading_target - heading)).clamp(-1.0, 1.0)
        acceleration = (0.5 * (self.cruise_speed - torch.hypot(vx, vy))).clamp(-1.0, 1.0)
        return torch.stack([acceleration, steering], dim=1)
