"""A fluent builder for custom scenarios: a road, platoons and single vehicles, autonomous vehicles.

Example::

    scenario = (
        ScenarioBuilder(Road.straight(num_lanes=2, speed_limit=25.0), dt=0.1)
        .platoon(lane=0, count=8, spacing=30.0, speed=(15.0, 20.0))
        .platoon(lane=1, count=6, spacing=40.0, driver=Driver(T=(1.0, 1.8)))
        .vehicle(lane=1, x=300.0, speed=10.0, autonomous=True)
        .build()
    )
    state, drivers = scenario.sample(batch_size=64, seed=0)

Any numeric setting written as a ``(low, high)`` pair is drawn uniformly, independently per world
(and per vehicle), from the generator seeded by ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
from torch import Tensor

from difftraffic.car_following import CarFollowingModel, Drivers, MixedDrivers
from difftraffic.dynamics import StepResult, rollout, step
from difftraffic.errors import (
    check_device,
    check_number,
    check_positive,
    check_simulation_dtype,
)
from difftraffic.idm import IDMParams
from difftraffic.krauss import KraussParams
from difftraffic.lane_change import MOBIL
from difftraffic.neighbors import compute_neighbors, detect_collisions
from difftraffic.road import Road
from difftraffic.state import TrafficState, body_extents

Controls = Callable[[TrafficState], tuple[Tensor | None, Tensor | None]]
"""The autonomous vehicles' ``(acceleration, steering)``, ``[B, N]`` each or ``None``, for a
state (:meth:`Scenario.play`)."""

Range = float | tuple[float, float]


def _check_range_setting(
    name: str,
    value: Range,
    low: float,
    unit: str = "",
    *,
    strict: bool = False,
    high: float = math.inf,
) -> None:
    bounds = value if isinstance(value, tuple) else (value, value)
    if len(bounds) != 2:
        raise ValueError(f"{name} must be a number or a (low, high) pair, got {value!r}")
    for bound in bounds:
        check_number(name, bound)
        if not math.isfinite(bound) or not (bound > low if strict else bound >= low):
            relation = ">" if strict else ">="
            raise ValueError(f"{name} must be finite and {relation} {low} {unit}, got {value!r}")
        if bound > high:
            raise ValueError(f"{name} must be <= {high} {unit}, got {value!r}")
    if bounds[0] > bounds[1]:
        raise ValueError(f"{name} range must have low <= high, got {value!r}")


class _DriverSettings:
    """Settings of a group of human drivers for the car-following model :attr:`MODEL`: each
    parameter a number or a ``(low, high)`` range, checked against the model's ranges."""

    MODEL: ClassVar[type[CarFollowingModel]]
    lane_change: MOBIL | None
    """MOBIL parameters (plain numbers) of drivers that change lanes; ``None``: they keep their
    lane. See :mod:`difftraffic.lane_change`."""

    def __post_init__(self) -> None:
        lane_change = self.lane_change
        if lane_change is not None and not isinstance(lane_change, MOBIL):
            raise ValueError(
                f"{type(self).__name__}.lane_change must be a difftraffic.MOBIL or None, "
                f"got {lane_change!r}"
            )
        for name, spec in self.MODEL.PARAMETERS.items():
            value = getattr(self, name)
            if name == "v0" and value is None:  # None: the road's speed limit
                continue
            _check_range_setting(
                f"{type(self).__name__}.{name}",
                value,
                spec.low,
                spec.unit,
                strict=not spec.low_inclusive,
                high=spec.high,
            )

    def value(self, name: str, road: Road) -> Range:
        """The setting of parameter ``name``, the road's speed limit for ``v0=None``."""
        value = getattr(self, name)
        return road.speed_limit if value is None else value


@dataclass(frozen=True)
class Driver(_DriverSettings):
    """IDM parameters of a group of human drivers; each a number or a ``(low, high)`` range.

    ``v0=None`` means the road's speed limit. Other defaults are SUMO's passenger IDM; see
    :class:`difftraffic.IDMParams`. ``lane_change``: :class:`difftraffic.MOBIL` settings for
    drivers that change lanes (``None``, the default: they keep their lane).
    """

    MODEL: ClassVar[type[CarFollowingModel]] = IDMParams

    v0: Range | None = None
    T: Range = 1.0
    a: Range = 2.6
    b: Range = 4.5
    delta: Range = 4.0
    s0: Range = 2.5
    lane_change: MOBIL | None = None


@dataclass(frozen=True)
class KraussDriver(_DriverSettings):
    """Krauss parameters of a group of human drivers (SUMO's default model); each a number or a
    ``(low, high)`` range.

    ``v0=None`` means the road's speed limit. Other defaults are SUMO's passenger car but
    ``sigma = 0`` (deterministic; SUMO's default is 0.5); see :class:`difftraffic.KraussParams`.
    A scenario with dawdling drivers (``sigma > 0``) needs a generator when it is stepped.
    ``lane_change`` as for :class:`Driver` (deterministic drivers only, ``sigma = 0``).
    """

    MODEL: ClassVar[type[CarFollowingModel]] = KraussParams

    v0: Range | None = None
    T: Range = 1.0
    a: Range = 2.6
    b: Range = 4.5
    s0: Range = 2.5
    sigma: Range = 0.0
    b_emergency: Range = 9.0
    lane_change: MOBIL | None = None


DriverSettings = Driver | KraussDriver
"""The settings of one group of human drivers, one class per car-following model."""


@dataclass(frozen=True)
class VehicleSpec:
    """One vehicle of a scenario, before sampling. Ranges are drawn per world."""

    lane: int
    x: Range
    speed: Range
    length: float
    width: float
    autonomous: bool
    driver: DriverSettings
    lateral_offset: float = 0.0


@dataclass(frozen=True)
class Scenario:
    """An immutable scenario: a road, a time step and vehicle specifications.

    Vehicle slots keep the order in which they were added.
    """

    road: Road
    dt: float
    vehicles: tuple[VehicleSpec, ...]

    @property
    def num_vehicles(self) -> int:
        return len(self.vehicles)

    def sample(
        self,
        batch_size: int = 1,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> tuple[TrafficState, Drivers]:
        """Draw ``batch_size`` worlds: the initial state and the drivers' parameters.

        Args:
            batch_size: number of worlds ``B``, >= 1.
            seed: seeds a fresh ``torch.Generator`` (ignored when ``generator`` is given);
                ``None`` draws a nondeterministic seed.
            device, dtype: where and in which floating type (``torch.float32`` or
                ``torch.float64``) the tensors live.
            generator: draw from this generator instead (on ``device``).

        Returns:
            ``(state, drivers)``: a validated :class:`TrafficState` of shape ``[B, N]`` and the
            drivers' model parameters as ``[B, N]`` tensors: :class:`difftraffic.IDMParams`
            or :class:`difftraffic.KraussParams` when every driver uses that model, else a
            :class:`difftraffic.MixedDrivers` (first model to appear first).

        Raises:
            ValueError: when vehicles overlap or leave the road in any sampled world.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        check_simulation_dtype("dtype", dtype)
        if device is not None:
            check_device("device", device)
        if generator is None:
            generator = _seeded_generator(seed, device)
        draw = _Sampler(batch_size, generator, device, dtype)
        specs = self.vehicles
        state = TrafficState(
            x=self.road.wrap(draw.column([s.x for s in specs])),
            y=draw.column([self.road.lane_center(s.lane) + s.lateral_offset for s in specs]),
            v=draw.column([s.speed for s in specs]),
            heading=draw.column([0.0 for _ in specs]),
            length=draw.column([s.length for s in specs]),
            width=draw.column([s.width for s in specs]),
            is_av=draw.flags([s.autonomous for s in specs]),
            active=draw.flags([True for _ in specs]),
        )
        drivers = self._draw_drivers(draw)
        state.validate()
        check_placement(state, self.road)
        return state, drivers

    def initial_state(
        self,
        batch_size: int = 1,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> TrafficState:
        """The initial state of :meth:`sample` alone."""
        return self.sample(batch_size, seed, device, dtype)[0]

    def simulate(
        self,
        steps: int,
        batch_size: int = 1,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[list[TrafficState], Tensor]:
        """Sample worlds and run them ``steps`` steps with autonomous vehicles coasting.

        Returns what :func:`difftraffic.dynamics.rollout` returns.
        """
        generator = _seeded_generator(seed, device)
        state, drivers = self.sample(batch_size, device=device, dtype=dtype, generator=generator)
        lane_changes = self.lane_changes(state.x)
        return rollout(
            state,
            self.road,
            drivers,
            self.dt,
            steps,
            generator=generator,
            lane_changes=lane_changes,
        )

    def play(
        self,
        state: TrafficState,
        drivers: Drivers,
        steps: int,
        controls: Controls | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[StepResult]:
        """Step worlds of this scenario (from :meth:`sample`) ``steps`` times, one result at a
        time: the loop of a viewer or a long simulation, which keeps no trajectory.

        Args:
            state, drivers: the worlds, ``[B, N]``.
            steps: steps to take (of :attr:`dt` seconds).
            controls: maps the state before a step to the autonomous vehicles' ``[B, N]``
                acceleration (m/s^2) and steering (rad), either ``None`` (coasting); ``None``:
                they coast.
            generator: the random draws of noisy drivers (Krauss ``sigma > 0``).

        The drivers' lane changes (:meth:`lane_changes`) apply, as in :meth:`simulate`.
        """
        lane_changes = self.lane_changes(state.x)
        neighbors = None
        for _ in range(steps):
            acceleration, steering = (None, None) if controls is None else controls(state)
            result = step(
                state,
                self.road,
                drivers,
                self.dt,
                acceleration,
                steering,
                neighbors,
                generator=generator,
                lane_changes=lane_changes,
            )
            state, neighbors = result.state, result.neighbors
            yield result

    def lane_changes(self, like: Tensor) -> MOBIL | None:
        """The drivers' MOBIL lane-change parameters for :func:`difftraffic.step`, ``[1, N]``
        tensors with ``like``'s dtype and device; ``enabled`` is False for autonomous vehicles
        and drivers without ``lane_change``. ``None`` when no driver changes lanes.
        """
        chosen = [None if s.autonomous else s.driver.lane_change for s in self.vehicles]
        if all(settings is None for settings in chosen):
            return None
        default = MOBIL()
        own = [default if settings is None else settings for settings in chosen]
        columns = {
            name: torch.tensor([[float(getattr(m, name)) for m in own]], dtype=like.dtype)
            for name in MOBIL.PARAMETERS
        }
        enabled = torch.tensor([[settings is not None for settings in chosen]])
        return MOBIL(**columns, enabled=enabled).to(like)

    def _draw_drivers(self, draw: _Sampler) -> Drivers:
        settings = [s.driver for s in self.vehicles]
        kinds = list(dict.fromkeys(type(d) for d in settings))
        members = tuple(self._draw_model(draw, kind, settings) for kind in kinds)
        if len(members) == 1:
            return members[0]
        choice = torch.tensor([kinds.index(type(d)) for d in settings], device=draw.device)
        return MixedDrivers(members, choice.expand(draw.batch_size, -1).clone())

    def _draw_model(
        self, draw: _Sampler, kind: type[DriverSettings], settings: list[DriverSettings]
    ) -> CarFollowingModel:
        """``kind``'s model with every vehicle's setting; vehicles of other models get ``kind``'s
        defaults (valid, unused values)."""
        default = kind()
        own = [d if isinstance(d, kind) else default for d in settings]
        return kind.MODEL(
            **{
                name: draw.column([d.value(name, self.road) for d in own])
                for name in kind.MODEL.PARAMETERS
            }
        )


class _Sampler:
    """Turns per-vehicle settings (numbers or ranges) into ``[B, N]`` tensors."""

    def __init__(
        self,
        batch_size: int,
        generator: torch.Generator,
        device: torch.device | str | None,
        dtype: torch.dtype,
    ) -> None:
        self.batch_size = batch_size
        self.generator = generator
        self.device = device
        self.dtype = dtype

    def column(self, settings: list[Range]) -> Tensor:
        low = torch.tensor([_bounds(s)[0] for s in settings], dtype=self.dtype, device=self.device)
        high = torch.tensor([_bounds(s)[1] for s in settings], dtype=self.dtype, device=self.device)
        shape = (self.batch_size, len(settings))
        unit = torch.rand(shape, generator=self.generator, dtype=self.dtype, device=self.device)
        return low + (high - low) * unit

    def flags(self, settings: list[bool]) -> Tensor:
        flags = torch.tensor(settings, dtype=torch.bool, device=self.device)
        return flags.expand(self.batch_size, len(settings)).clone()


def _seeded_generator(seed: int | None, device: torch.device | str | None) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (a nondeterministic seed for ``None``)."""
    generator = torch.Generator(device=device or "cpu")
    generator.manual_seed(seed if seed is not None else int(torch.seed()))
    return generator


def _bounds(setting: Range) -> tuple[float, float]:
    return setting if isinstance(setting, tuple) else (float(setting), float(setting))


def check_placement(state: TrafficState, road: Road) -> None:
    """Raise ``ValueError`` if an active vehicle overlaps another or sticks out of the road.

    Overlaps are looked for among bodies that share a lane under the ``"body"`` rule whatever
    ``road.lane_membership`` is: under ``"center"`` a car straddling a boundary would otherwise
    go unchecked against the lane it straddles into.

    Args:
        state: ``[B, N]`` state to check.
        road: the road it lives on.
    """
    _, _, low_y, high_y = body_extents(state)
    off_road = state.active & ((low_y < 0) | (high_y > road.width))
    if bool(off_road.any()):
        world, vehicle = (int(i) for i in torch.nonzero(off_road)[0])
        raise ValueError(
            f"vehicle {vehicle} in world {world} is off the road: its body spans "
            f"y in [{low_y[world, vehicle].item():.3f}, {high_y[world, vehicle].item():.3f}] m, "
            f"valid range [0, {road.width}] m"
        )
    if road.lane_ends is not None:
        end = road.lane_end_x(state.x)[road.nearest_lane(state.y)]
        beyond = state.active & (state.x > end)
        if bool(beyond.any()):
            world, vehicle = (int(i) for i in torch.nonzero(beyond)[0])
            lane = int(road.nearest_lane(state.y[world, vehicle]))
            raise ValueError(
                f"vehicle {vehicle} in world {world} starts at x = "
                f"{state.x[world, vehicle].item():.3f} m, beyond the end of its lane {lane} "
                f"(Road.lane_ends[{lane}] = {road.lane_ends[lane]} m)"
            )
    by_body = replace(road, lane_membership="body")
    overlapping = detect_collisions(state, compute_neighbors(state, by_body), by_body)
    if bool(overlapping.any()):
        world, vehicle = (int(i) for i in torch.nonzero(overlapping)[0])
        raise ValueError(
            f"vehicle {vehicle} in world {world} overlaps another vehicle at the start "
            f"(x = {state.x[world, vehicle].item():.3f} m, "
            f"y = {state.y[world, vehicle].item():.3f} m); "
            "vehicles in a shared lane need x differences of at least the leader's length"
        )


@dataclass
class ScenarioBuilder:
    """Builds a :class:`Scenario` step by step; every method returns the builder.

    Args:
        road: the road.
        dt: time step (s), > 0. Default 0.1 s.
        length: default vehicle length (m). Default 5 m (SUMO passenger car).
        width: default vehicle width (m). Default 2 m.
        driver: default human driver parameters.
    """

    road: Road
    dt: float = 0.1
    length: float = 5.0
    width: float = 2.0
    driver: DriverSettings = field(default_factory=Driver)
    _vehicles: list[VehicleSpec] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        check_positive("dt", self.dt, "s")
        check_positive("length", self.length, "m")
        check_positive("width", self.width, "m")

    def vehicle(
        self,
        lane: int,
        x: Range,
        speed: Range = 0.0,
        *,
        autonomous: bool = False,
        driver: DriverSettings | None = None,
        length: float | None = None,
        width: float | None = None,
        lateral_offset: float = 0.0,
    ) -> ScenarioBuilder:
        """Add one vehicle.

        Args:
            lane: lane index in ``[0, num_lanes)``.
            x: front-bumper position (m) or a ``(low, high)`` range.
            speed: initial speed (m/s) >= 0, or a range.
            autonomous: True for a vehicle driven by actions instead of the IDM.
            driver: the human driver's model settings (:class:`Driver` for the IDM,
                :class:`KraussDriver`); the builder's default when ``None``.
            length, width: body size (m); the builder's defaults when ``None``.
            lateral_offset: offset (m) of the vehicle from its lane centre.
        """
        self._check_lane(lane)
        _check_range_setting("x", x, -float("inf"), "m")
        _check_range_setting("speed", speed, 0.0, "m/s")
        length = self.length if length is None else length
        width = self.width if width is None else width
        check_positive("length", length, "m")
        check_positive("width", width, "m")
        spec = VehicleSpec(
            lane, x, speed, length, width, autonomous, driver or self.driver, lateral_offset
        )
        self._vehicles.append(spec)
        return self

    def platoon(
        self,
        lane: int,
        count: int,
        start: float = 0.0,
        spacing: float = 20.0,
        speed: Range = 0.0,
        *,
        driver: DriverSettings | None = None,
        jitter: float = 0.0,
        length: float | None = None,
        width: float | None = None,
    ) -> ScenarioBuilder:
        """Add ``count`` human drivers in one lane, front bumpers at ``start + k * spacing``.

        Args:
            lane: lane index.
            count: number of vehicles, >= 1.
            start: position (m) of the rearmost vehicle's front bumper.
            spacing: front-to-front distance (m), > 0.
            speed: initial speed (m/s) or range, drawn per vehicle.
            driver: the drivers' model settings (:class:`Driver`, :class:`KraussDriver`); the
                builder's default when ``None``.
            jitter: each position is drawn from ``[p - jitter, p + jitter]`` (m), >= 0.
        """
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an integer >= 1, got {count!r}")
        check_positive("spacing", spacing, "m")
        if not jitter >= 0:
            raise ValueError(f"jitter must be >= 0 m, got {jitter!r}")
        for k in range(count):
            position = start + k * spacing
            x = (position - jitter, position + jitter) if jitter > 0 else position
            self.vehicle(lane, x, speed, driver=driver, length=length, width=width)
        return self

    def build(self) -> Scenario:
        """The finished :class:`Scenario`."""
        if not self._vehicles:
            raise ValueError(
                "a scenario needs at least one vehicle; add one with vehicle() or platoon()"
            )
        return Scenario(self.road, self.dt, tuple(self._vehicles))

    def _check_lane(self, lane: int) -> None:
        if not isinstance(lane, int) or not 0 <= lane < self.road.num_lanes:
            raise ValueError(
                f"lane must be an integer in [0, {self.road.num_lanes - 1}], got {lane!r}"
            )
