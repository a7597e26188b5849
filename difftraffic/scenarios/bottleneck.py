"""A lane-drop bottleneck: a straight road whose top lane ends, fed at a steady inflow.

Cars enter at the upstream end at a given demand (vehicles per hour, one per world), in the lane
with the most room, and leave at the downstream end. Human drivers follow the IDM and change
lanes by MOBIL (:mod:`difftraffic.lane_change`); those in the ending lane treat its end as a
standing obstacle, so they must merge before it. Below the bottleneck's capacity the outflow
follows the inflow; above it a queue grows upstream of the lane drop, and the flow it
discharges is lower than the flow the road carried before the queue formed: the *capacity drop*
that :func:`run_bottleneck` measures.

The road holds ``slots`` vehicle slots per world; a car that leaves frees its slot for a later
one, which keeps the slot's driver parameters (drawn per slot and world at the start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from difftraffic.car_following import Drivers
from difftraffic.dynamics import step
from difftraffic.errors import check_count, check_positive
from difftraffic.lane_change import MOBIL, with_target_lanes
from difftraffic.neighbors import Neighbors, lane_occupancy
from difftraffic.road import Road
from difftraffic.scenario import Driver, ScenarioBuilder
from difftraffic.state import TrafficState

BOTTLENECK_DRIVER = Driver(
    v0=(28.0, 34.0),
    T=(1.0, 1.5),
    a=(1.2, 1.8),
    b=2.0,
    s0=2.0,
    lane_change=MOBIL(politeness=0.2, threshold=0.1, b_safe=3.0, duration=3.0),
)
"""Highway drivers: desired speeds 100-120 km/h, headways 1-1.5 s, moderate acceleration."""


@dataclass(frozen=True)
class BottleneckConfig:
    """The road, its drivers and how cars enter.

    Attributes:
        lanes: lanes upstream of the drop, >= 2; the top lane (``lanes - 1``) ends.
        length: road length (m); cars leave at its end.
        drop_at: where the top lane ends (m), inside the road.
        slots: vehicle slots per world (the most cars on the road at once).
        vehicle_length: body length (m).
        entry_speed: speed (m/s) at which cars enter (lower behind a slower car near the entry).
        entry_gap: the least gap (m) to the nearest car ahead in a lane for a car to enter it.
        driver: the drivers' settings (with ``lane_change``), drawn per slot and world.
        speed_limit: the road's speed limit (m/s).
        dt: time step (s).
    """

    lanes: int = 2
    length: float = 1500.0
    drop_at: float = 1000.0
    slots: int = 160
    vehicle_length: float = 5.0
    entry_speed: float = 25.0
    entry_gap: float = 30.0
    driver: Driver = field(default_factory=lambda: BOTTLENECK_DRIVER)
    speed_limit: float = 34.0
    dt: float = 0.1

    def __post_init__(self) -> None:
        check_count("lanes", self.lanes, 2)
        for name, unit in (("length", "m"), ("entry_speed", "m/s"), ("entry_gap", "m")):
            check_positive(name, getattr(self, name), unit)
        if not 0 < self.drop_at < self.length:
            raise ValueError(
                f"drop_at must be in (0, {self.length}) m (inside the road), got {self.drop_at!r}"
            )
        check_count("slots", self.slots, 2)
        if self.driver.lane_change is None:
            raise ValueError("driver.lane_change must be set: cars must merge before the drop")

    @property
    def road(self) -> Road:
        ends = (math.inf,) * (self.lanes - 1) + (self.drop_at,)
        return Road.straight(self.lanes, speed_limit=self.speed_limit, lane_ends=ends)


class Bottleneck(NamedTuple):
    """Worlds of a bottleneck ready to run: an empty road, drivers per slot, lane changes."""

    state: TrafficState
    drivers: Drivers
    lane_changes: MOBIL


def bottleneck_worlds(
    config: BottleneckConfig,
    batch_size: int,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Bottleneck:
    """``batch_size`` empty roads (every slot inactive) with drivers drawn per slot."""
    builder = ScenarioBuilder(config.road, dt=config.dt, length=config.vehicle_length)
    # Parked behind the entry, only to draw their drivers; inactive from the start.
    spacing = 2 * config.vehicle_length
    builder.platoon(0, config.slots, start=-spacing * config.slots, spacing=spacing,
                    driver=config.driver)  # fmt: skip
    scenario = builder.build()
    state, drivers = scenario.sample(batch_size, device=device, dtype=dtype, generator=generator)
    lane_changes = scenario.lane_changes(state.x)
    assert lane_changes is not None  # checked in BottleneckConfig
    return Bottleneck(state.replace(active=torch.zeros_like(state.active)), drivers, lane_changes)


def enter(state: TrafficState, road: Road, due: Tensor, config: BottleneckConfig) -> Tensor:
    """``[B]`` bool: the worlds ``due`` (``[B]`` bool) where a car can enter now, in the lane with
    the most room at the entry, with ``entry_gap`` to the car ahead and a free slot."""
    room, _ = _entry_room(state, road, config)
    best = room.max(-1).values
    return due & (best >= config.entry_gap) & (~state.active).any(1)


def _entry_room(state: TrafficState, road: Road, config: BottleneckConfig) -> tuple[Tensor, Tensor]:
    """``([B, L] gap from a car entering each lane to the nearest car ahead in it (inf when
    empty), [B, L] index of that car)``; cars changing lane count in both lanes."""
    entry = config.vehicle_length  # an entering car's front bumper: its rear on x = 0
    lane_changes = config.driver.lane_change
    assert lane_changes is not None  # checked in BottleneckConfig
    members = with_target_lanes(lane_occupancy(state, road), state, road, lane_changes)
    rear = (state.x - state.length).unsqueeze(-1)
    gap = torch.where(members, rear - entry, torch.inf)  # [B, N, L]
    room, nearest = gap.min(1)
    return room, nearest


def insert(
    state: TrafficState, road: Road, worlds: Tensor, config: BottleneckConfig
) -> TrafficState:
    """A car enters in each of ``worlds`` (``[B]`` bool, from :func:`enter`): the first free slot,
    in the lane with the most room, at ``entry_speed`` or the speed of the car ahead when that
    is slower."""
    room, nearest = _entry_room(state, road, config)
    lane = room.argmax(-1)  # [B]
    ahead = nearest.gather(1, lane.unsqueeze(1)).squeeze(1)
    ahead_speed = state.v.gather(1, ahead.unsqueeze(1)).squeeze(1)
    speed = torch.where(
        torch.isfinite(room.max(-1).values),
        ahead_speed.clamp(max=config.entry_speed),
        torch.full_like(ahead_speed, config.entry_speed),
    )
    slot = (~state.active).to(torch.uint8).argmax(1)
    here = worlds.unsqueeze(1) & (
        torch.arange(state.num_vehicles, device=slot.device) == slot.unsqueeze(1)
    )

    def put(field: Tensor, value: Tensor) -> Tensor:
        return torch.where(here, value.unsqueeze(1).to(field.dtype), field)

    return state.replace(
        x=put(state.x, torch.full_like(speed, config.vehicle_length)),
        y=put(state.y, road.lane_center(lane).to(state.y.dtype)),
        v=put(state.v, speed),
        heading=put(state.heading, torch.zeros_like(speed)),
        active=state.active | here,
    )


class BottleneckResult(NamedTuple):
    """What :func:`run_bottleneck` measured per world (``[B]`` unless said otherwise).

    Attributes:
        demand: the inflow asked for (veh/h).
        inflow: the cars that entered per hour over the measuring window.
        outflow: the cars that left per hour over the measuring window.
        outflow_series: ``[B, T]`` cars that left per hour in each minute of the run.
        queue_series: ``[B, T]`` cars upstream of the drop slower than 5 m/s at the end of
            each minute: the queue.
        collisions: collision flags raised during the run.
    """

    demand: Tensor
    inflow: Tensor
    outflow: Tensor
    outflow_series: Tensor
    queue_series: Tensor
    collisions: Tensor


def run_bottleneck(
    config: BottleneckConfig,
    demand: Tensor,
    seconds: float,
    window: float,
    generator: torch.Generator,
) -> BottleneckResult:
    """Feed each world its ``demand`` (``[B]`` veh/h) for ``seconds``; flows are measured over
    the last ``window`` seconds. Runs without autograd (a measurement)."""
    road = config.road
    worlds = bottleneck_worlds(config, demand.shape[0], generator, dtype=demand.dtype)
    state, drivers, lane_changes = worlds
    steps = round(seconds / config.dt)
    measured_from = steps - round(window / config.dt)
    per_minute = round(60 / config.dt)
    credit = torch.zeros_like(demand)
    entered = torch.zeros_like(demand)
    left = torch.zeros_like(demand)
    series = torch.zeros(demand.shape[0], math.ceil(steps / per_minute), dtype=demand.dtype)
    queue = torch.zeros_like(series)
    collisions = torch.zeros_like(demand)
    neighbors: Neighbors | None = None
    with torch.no_grad():
        for t in range(steps):
            credit = credit + demand / 3600 * config.dt
            entering = enter(state, road, credit >= 1, config)
            if bool(entering.any()):
                state = insert(state, road, entering, config)
                neighbors = None
            credit = credit - entering.to(credit.dtype)
            result = step(state, road, drivers, config.dt, neighbors=neighbors,
                          lane_changes=lane_changes)  # fmt: skip
            state, neighbors = result.state, result.neighbors
            leaving = state.active & (state.x >= config.length)
            if bool(leaving.any()):
                state = state.replace(active=state.active & ~leaving)
                neighbors = None
            collisions += result.collided.sum(1)
            series[:, t // per_minute] += leaving.sum(1)
            if (t + 1) % per_minute == 0 or t == steps - 1:  # the queue at each minute's end
                queue[:, t // per_minute] = queued(state, config).to(queue.dtype)
            if t >= measured_from:
                entered += entering.to(demand.dtype)
                left += leaving.sum(1)
    hours = window / 3600
    return BottleneckResult(demand, entered / hours, left / hours, series * 60, queue, collisions)


QUEUED_SPEED = 5.0
"""m/s: a car upstream of the drop slower than this is queued."""


def queued(state: TrafficState, config: BottleneckConfig) -> Tensor:
    """``[B]`` cars upstream of the lane drop slower than :data:`QUEUED_SPEED`."""
    slow = state.active & (state.x < config.drop_at) & (state.v < QUEUED_SPEED)
    return slow.sum(1)


class BottleneckTask:
    """Automated cars in the through lane of a lane drop, driven to raise the flow past it.

    Two lanes merge into one at ``config.drop_at``; a platoon of human drivers (IDM with MOBIL,
    ``config.driver``) fills both lanes upstream, with ``autonomous`` automated cars spread over
    the through lane (lane 0). Each AV's action is its acceleration (times
    ``max_acceleration``); it keeps its lane. The reward of a step is the mean speed of every
    car over ``speed_scale``: the faster the platoon gets through the merge, the more it
    collects (an AV that opens a gap for a merging car can raise it). An AV's collision ends
    the episode with reward -1.

    Observation, per AV: its speed, the speed difference to the car ahead of it in lane 0
    (counting cars merging into it), the gap to that car, its distance to the drop; then the
    fraction of cars past the drop. Speeds over ``speed_scale``, distances over
    ``config.length``.
    """

    def __init__(
        self,
        config: BottleneckConfig = BottleneckConfig(length=800.0, drop_at=500.0),  # noqa: B008
        humans_per_lane: int = 10,
        autonomous: int = 2,
        spacing: float = 25.0,
        speed: float = 20.0,
        max_acceleration: float = 3.0,
        max_episode_steps: int = 600,
        speed_scale: float = 30.0,
    ) -> None:
        for name, count in (
            ("humans_per_lane", humans_per_lane),
            ("autonomous", autonomous),
            ("max_episode_steps", max_episode_steps),
        ):
            check_count(name, count, 1)
        for name, value in (
            ("spacing", spacing),
            ("max_acceleration", max_acceleration),
            ("speed_scale", speed_scale),
        ):
            check_positive(name, value)
        self.config = config
        self.road = config.road
        self.action_dim = autonomous
        self.obs_dim = 4 * autonomous + 1
        self.max_acceleration, self.speed_scale = max_acceleration, speed_scale
        self._max_episode_steps = max_episode_steps
        builder = ScenarioBuilder(self.road, dt=config.dt, length=config.vehicle_length)
        through = humans_per_lane + autonomous
        every = through / autonomous
        self.av_slots = [round(k * every + every / 2) for k in range(autonomous)]
        for k in range(through):
            builder.vehicle(0, k * spacing + config.vehicle_length, speed,
                            autonomous=k in self.av_slots, driver=config.driver)  # fmt: skip
        builder.platoon(1, humans_per_lane, start=config.vehicle_length + spacing / 2,
                        spacing=spacing, speed=speed, driver=config.driver)  # fmt: skip
        if (through - 1) * spacing + config.vehicle_length >= config.drop_at:
            raise ValueError(
                f"the platoon ({through} cars {spacing} m apart) must start before drop_at = "
                f"{config.drop_at} m"
            )
        self.scenario = builder.build()
        self.lane_changes = self.scenario.lane_changes(torch.zeros(1))

    @property
    def dt(self) -> float:
        return self.config.dt

    @property
    def max_episode_steps(self) -> int:
        return self._max_episode_steps

    def initial(
        self, batch_size: int, generator: torch.Generator, device: torch.device | str | None,
        dtype: torch.dtype,
    ) -> tuple[TrafficState, Drivers]:  # fmt: skip
        """The platoon upstream of the drop, drivers drawn per world from ``generator``."""
        return self.scenario.sample(batch_size, generator=generator, device=device, dtype=dtype)

    def controls(self, state: TrafficState, action: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, K]`` actions -> ``[B, N]`` AV accelerations (m/s^2) and steering (0)."""
        acceleration = torch.zeros_like(state.x)
        acceleration[:, self.av_slots] = action.clamp(-1.0, 1.0) * self.max_acceleration
        return acceleration, torch.zeros_like(state.x)

    def ahead_in_through_lane(self, state: TrafficState) -> tuple[Tensor, Tensor]:
        """``([B, K] gap (m), [B, K] speed (m/s))`` of the car ahead of each AV in lane 0,
        cars changing into it included; a gap of the road's length where there is none."""
        assert self.lane_changes is not None
        members = with_target_lanes(lane_occupancy(state, self.road), state, self.road,
                                    self.lane_changes.to(state.x))[..., 0]  # fmt: skip
        av_x = state.x[:, self.av_slots].unsqueeze(-1)  # [B, K, 1]
        rear = (state.x - state.length).unsqueeze(1)  # [B, 1, N]
        ahead = members.unsqueeze(1) & (state.x.unsqueeze(1) > av_x)
        gap = torch.where(ahead, rear - av_x, self.config.length)
        nearest, index = gap.min(-1)
        return nearest, state.v.gather(1, index)

    def observe(self, state: TrafficState) -> Tensor:
        gap, lead_speed = self.ahead_in_through_lane(state)
        own = state.v[:, self.av_slots]
        to_drop = self.config.drop_at - state.x[:, self.av_slots]
        passed = (state.active & (state.x > self.config.drop_at)).to(state.x.dtype).mean(-1)
        features = torch.stack(
            [
                own / self.speed_scale,
                (lead_speed - own) / self.speed_scale,
                gap / self.config.length,
                to_drop / self.config.length,
            ],
            -1,
        )
        return torch.cat([features.flatten(1), passed.unsqueeze(-1)], -1)

    def evaluate(
        self, state: TrafficState, collided: Tensor
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        reward = state.v.mean(-1) / self.speed_scale
        terminated = collided[:, self.av_slots].any(-1)
        reward = torch.where(terminated, torch.full_like(reward, -1.0), reward)
        return reward, terminated, {"collision": terminated}
