"""The ring road of Sugiyama et al. (2008): stop-and-go waves without a bottleneck.

22 cars on a single-lane ring of 230 m start nearly evenly spaced at about 30 km/h; small
differences between drivers (drawn per world from a seeded generator) and the IDM's string
instability at these headways grow into a jam that travels upstream, against the traffic, at
about 20 km/h in the experiment.

:func:`ring_scenario` builds the set-up; :func:`speed_field` samples the simulated speeds on a
grid along the ring (the time-space diagram), :func:`wave_speed` measures how fast the pattern
moves (m/s, negative upstream) and :func:`uniform_flow_speed` gives the speed of the steady
flow that the waves destroy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from difftraffic.car_following import Drivers
from difftraffic.dynamics import step
from difftraffic.errors import check_count, check_non_negative, check_positive
from difftraffic.idm import IDMParams, equilibrium_gap, idm_acceleration
from difftraffic.road import Road
from difftraffic.scenario import Driver, DriverSettings, Scenario, ScenarioBuilder
from difftraffic.state import TrafficState

SUGIYAMA_DRIVER = Driver(v0=(14.0, 16.0), T=(0.5, 0.7), a=(0.6, 0.9), b=1.5, s0=1.5)
"""IDM drivers whose equilibrium on the Sugiyama ring (10.5 m per car) is about 28 km/h, as in
the experiment, with a small spread of desired speed, headway and acceleration; a low maximum
acceleration makes the platoon string-unstable, so waves grow out of the spread."""


@dataclass(frozen=True)
class RingConfig:
    """The ring and its drivers.

    Attributes:
        length: circumference (m). Sugiyama: 230 m.
        vehicles: number of cars, all human. Sugiyama: 22.
        vehicle_length: body length (m).
        speed: initial speed of every car (m/s).
        jitter: each car starts up to this far (m) from an even spacing.
        driver: the drivers' settings, ranges drawn per car and world.
        dt: time step (s).
        autonomous: car 0 is an automated vehicle driven by actions (mixed autonomy), the
            others human.
    """

    length: float = 230.0
    vehicles: int = 22
    vehicle_length: float = 4.0
    speed: float = 7.0
    jitter: float = 0.5
    driver: DriverSettings = field(default_factory=lambda: SUGIYAMA_DRIVER)
    dt: float = 0.1
    autonomous: bool = False

    def __post_init__(self) -> None:
        check_positive("length", self.length, "m")
        check_positive("vehicle_length", self.vehicle_length, "m")
        check_positive("dt", self.dt, "s")
        check_non_negative("speed", self.speed, "m/s")
        if not isinstance(self.vehicles, int) or self.vehicles < 2:
            raise ValueError(f"vehicles={self.vehicles!r} is invalid; valid range: integer >= 2")
        spacing = self.length / self.vehicles
        if not 0 <= self.jitter < (spacing - self.vehicle_length) / 2:
            raise ValueError(
                f"jitter={self.jitter} m is invalid; valid range: 0 <= jitter < "
                f"{(spacing - self.vehicle_length) / 2:g} m (half the initial gap), or cars overlap"
            )


def ring_scenario(config: RingConfig = RingConfig()) -> Scenario:  # noqa: B008 (frozen)
    """The ring of ``config`` with its cars evenly spaced (up to ``jitter``); with
    ``config.autonomous`` car 0 (the rearmost at the start) is the automated vehicle."""
    road = Road.ring(config.length, speed_limit=max(config.speed, 1.0) * 3)
    builder = ScenarioBuilder(road, dt=config.dt, length=config.vehicle_length)
    spacing = config.length / config.vehicles
    first = 0
    if config.autonomous:
        x = (-config.jitter, config.jitter) if config.jitter > 0 else 0.0
        builder.vehicle(0, x, config.speed, autonomous=True)
        first = 1
    return builder.platoon(
        lane=0,
        count=config.vehicles - first,
        start=first * spacing,
        spacing=spacing,
        speed=config.speed,
        driver=config.driver,
        jitter=config.jitter,
    ).build()


def uniform_flow_speed(params: IDMParams, ring_length: float, vehicle_length: float) -> Tensor:
    """The speed (m/s) at which IDM drivers ``params [B, N]`` all drive steadily on a ring:
    the ``v`` whose equilibrium gaps fill it, ``sum_i s_e,i(v) = ring_length - N length``
    (bisection; each gap grows with ``v``). ``[B]``; 0 if the cars do not fit at rest."""
    v0 = torch.as_tensor(params.v0)
    free = ring_length - v0.shape[-1] * vehicle_length
    low = torch.zeros(v0.shape[:-1], dtype=v0.dtype, device=v0.device)
    high = v0.min(-1).values
    for _ in range(60):
        middle = (low + high) / 2
        fits = equilibrium_gap(middle[..., None], params).sum(-1) <= free
        low, high = torch.where(fits, middle, low), torch.where(fits, high, middle)
    return low


def speed_field(states: Sequence[TrafficState], ring_length: float, cells: int = 230) -> Tensor:
    """The speed along the ring over time, the time-space diagram of a single-lane ring.

    Args:
        states: ``T`` states, each ``[B, N]``, every car on one lane of the ring.
        ring_length: circumference (m).
        cells: grid points along the ring, at ``ring_length * j / cells``.

    Returns:
        ``[B, T, cells]`` speed (m/s) at each grid point: linear in position between the two
        cars around it (front bumpers), wrapping around the ring.
    """
    x = torch.stack([s.x for s in states], 1).remainder(ring_length)  # [B, T, N]
    v = torch.stack([s.v for s in states], 1)
    x, order = x.sort(-1)
    v = v.gather(-1, order)
    # the last car before the origin and the first after the end, for the wrap-around
    x = torch.cat([x[..., -1:] - ring_length, x, x[..., :1] + ring_length], -1)
    v = torch.cat([v[..., -1:], v, v[..., :1]], -1)
    grid = torch.arange(cells, dtype=x.dtype, device=x.device) * (ring_length / cells)
    above = torch.searchsorted(x, grid.expand(*x.shape[:-1], cells).contiguous()).clamp(1, None)
    x0, x1 = x.gather(-1, above - 1), x.gather(-1, above)
    v0, v1 = v.gather(-1, above - 1), v.gather(-1, above)
    weight = (grid - x0) / (x1 - x0).clamp_min(1e-9)
    return v0 + weight * (v1 - v0)


def wave_speed(field: Tensor, ring_length: float, dt: float, lag: int = 50) -> Tensor:
    """How fast a speed pattern travels along the ring (m/s; negative: upstream, against the
    traffic).

    For each pair of times ``lag`` steps apart, the shift along the ring that best aligns the
    later speed profile with the earlier one (circular cross-correlation of the profiles minus
    their means, by FFT), averaged over the pairs.

    Args:
        field: ``[B, T, cells]`` from :func:`speed_field`.
        ring_length: circumference (m).
        dt: time between consecutive rows (s).
        lag: steps between the compared profiles; the pattern must move less than half the ring
            in that time.

    Returns:
        ``[B]`` wave speed (m/s).
    """
    if not 0 < lag < field.shape[1]:
        raise ValueError(f"lag={lag} is invalid; valid range: 1..{field.shape[1] - 1} steps")
    centred = field - field.mean(-1, keepdim=True)
    earlier, later = torch.fft.rfft(centred[:, :-lag], dim=-1), torch.fft.rfft(centred[:, lag:])
    correlation = torch.fft.irfft(later * earlier.conj(), n=field.shape[-1], dim=-1).sum(1)
    cells = field.shape[-1]
    peak = correlation.argmax(-1, keepdim=True)
    # a parabola through the peak and its neighbours places it between grid points
    left, centre, right = (correlation.gather(-1, (peak + k) % cells) for k in (-1, 0, 1))
    curvature = left - 2 * centre + right
    offset = torch.where(curvature < 0, 0.5 * (left - right) / curvature, 0.0)
    shift = (peak + offset).squeeze(-1)
    shift = torch.where(shift > cells / 2, shift - cells, shift)  # the nearest way round
    return shift.to(field.dtype) * (ring_length / cells) / (lag * dt)


WARMUP_DRIVER = IDMParams(v0=15.0, T=0.6, a=0.75, b=1.5, s0=1.5)
"""The average :data:`SUGIYAMA_DRIVER`: how the AV drives during a ring task's warm-up."""


class RingTask:
    """Mixed autonomy on the ring (in the spirit of Flow's "ring" benchmark, Wu et al.): one
    automated car among the humans, rewarded for the ring's mean speed, penalized for driving
    closer than ``min_time_headway`` behind its leader. A :class:`difftraffic.env.TrafficTask`.

    Observation ``[B, 3]``: the AV's speed, its leader's speed minus its own (both over
    ``speed_scale``), and its gap to the leader over the ring's length. Action ``[B, 1]`` in
    ``[-1, 1]``: acceleration over ``max_acceleration``, clipped. Reward per step: the mean speed
    of all cars over ``speed_scale``, minus ``headway_penalty`` times how far the AV's gap falls
    short of ``min_gap + v min_time_headway`` (as a fraction of it, 0 when it does not); -1 and the
    end of the episode on a collision.

    Args:
        config: the ring (``autonomous`` is set to True).
        max_acceleration: m/s^2 at action 1 (Flow: 1).
        max_episode_steps: steps of an episode.
        warmup_steps: steps driven before an episode starts, the AV as an average human (3000,
            300 s: every world is in stop-and-go by then; 0 starts from even spacing).
        start_states: episodes start from one of this many worlds, warmed up once per device
            and dtype and drawn with the environment's generator (a reset then costs no
            simulation); 0 warms up every reset's worlds afresh.
        start_seed: seeds the warm-up of those worlds, independently of the environment's
            generator, so that a resumed run draws from the same ones.
        min_time_headway: s; gaps below ``min_gap + v min_time_headway`` are penalized.
        min_gap: m, the standstill part of that gap (the humans' ``s0``).
        headway_penalty: weight of the headway term.
        speed_scale: m/s that observations and the reward divide speeds by.
    """

    action_dim = 1
    obs_dim = 3

    def __init__(
        self,
        config: RingConfig = RingConfig(),  # noqa: B008 (frozen)
        max_acceleration: float = 1.0,
        max_episode_steps: int = 1500,
        warmup_steps: int = 3000,
        start_states: int = 256,
        start_seed: int = 0,
        min_time_headway: float = 1.0,
        min_gap: float = 1.5,
        headway_penalty: float = 0.1,
        speed_scale: float = 10.0,
    ) -> None:
        for name, value in (
            ("max_acceleration", max_acceleration),
            ("speed_scale", speed_scale),
            ("min_time_headway", min_time_headway),
            ("min_gap", min_gap),
        ):
            check_positive(name, value)
        check_non_negative("headway_penalty", headway_penalty)
        check_count("max_episode_steps", max_episode_steps, 1)
        for name, count in (("warmup_steps", warmup_steps), ("start_states", start_states)):
            check_count(name, count, 0)
        if not isinstance(start_seed, int) or isinstance(start_seed, bool):
            raise ValueError(f"start_seed={start_seed!r} must be an integer")
        self.warmup_steps = warmup_steps
        self.start_states = start_states
        self.start_seed = start_seed
        self._starts: dict[tuple[str, torch.dtype], tuple[TrafficState, Drivers]] = {}
        self.config = replace(config, autonomous=True)
        self.scenario = ring_scenario(self.config)
        self.road = self.scenario.road
        self.max_acceleration, self.speed_scale = max_acceleration, speed_scale
        self.min_time_headway, self.headway_penalty = min_time_headway, headway_penalty
        self.min_gap = min_gap
        self._max_episode_steps = max_episode_steps

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
        """Worlds in stop-and-go: ``start_states`` worlds warmed up once (see :meth:`warm_up`),
        drawn with ``generator``; with ``start_states=0`` fresh worlds warmed up now."""
        if self.start_states == 0 or self.warmup_steps == 0:
            state, drivers = self.scenario.sample(
                batch_size, generator=generator, device=device, dtype=dtype
            )
            return self.warm_up(state, drivers, generator)
        starts, start_drivers = self._start_worlds(device, dtype)
        index = torch.randint(
            self.start_states, (batch_size,), generator=generator, device=generator.device
        ).to(starts.x.device)
        return starts.index_worlds(index), start_drivers.index_worlds(index)

    def _start_worlds(
        self, device: torch.device | str | None, dtype: torch.dtype
    ) -> tuple[TrafficState, Drivers]:
        where = torch.device(device if device is not None else "cpu")
        key = (str(where), dtype)
        if key not in self._starts:
            generator = torch.Generator(device=where).manual_seed(self.start_seed)
            state, drivers = self.scenario.sample(
                self.start_states, generator=generator, device=where, dtype=dtype
            )
            self._starts[key] = self.warm_up(state, drivers, generator)
        return self._starts[key]

    def warm_up(
        self, state: TrafficState, drivers: Drivers, generator: torch.Generator
    ) -> tuple[TrafficState, Drivers]:
        """``warmup_steps`` steps from ``state`` with the AV driving like an average human
        (:data:`WARMUP_DRIVER`), so that episodes start in the stop-and-go the AV is to damp (as
        Flow's ring does)."""
        neighbors = None  # each step's leader relations are the next one's
        with torch.no_grad():
            for _ in range(self.warmup_steps):
                gap, lead_speed = self.leader(state)
                acceleration = torch.zeros_like(state.x)
                acceleration[:, 0] = idm_acceleration(
                    state.v[:, 0], lead_speed, gap.clamp_min(0.1), WARMUP_DRIVER
                )
                state, neighbors, _, _ = step(
                    state,
                    self.road,
                    drivers,
                    self.dt,
                    acceleration,
                    neighbors=neighbors,
                    generator=generator,
                )
        return state, drivers

    def controls(self, state: TrafficState, action: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, 1]`` action -> ``[B, N]`` AV acceleration (m/s^2) and steering (0)."""
        acceleration = torch.zeros_like(state.x)
        acceleration[:, 0] = action[:, 0].clamp(-1.0, 1.0) * self.max_acceleration
        return acceleration, torch.zeros_like(state.x)

    def leader(self, state: TrafficState) -> tuple[Tensor, Tensor]:
        """``([B] gap (m), [B] speed (m/s))`` of the car ahead of the AV on the ring."""
        ahead = (state.x[:, 1:] - state.x[:, :1]).remainder(self.config.length)
        distance, index = ahead.min(-1)
        speed = state.v[:, 1:].gather(1, index[:, None])[:, 0]
        length = state.length[:, 1:].gather(1, index[:, None])[:, 0]
        return distance - length, speed

    def observe(self, state: TrafficState) -> Tensor:
        gap, lead_speed = self.leader(state)
        own = state.v[:, 0]
        return torch.stack(
            [
                own / self.speed_scale,
                (lead_speed - own) / self.speed_scale,
                gap / self.config.length,
            ],
            -1,
        )

    def evaluate(
        self, state: TrafficState, collided: Tensor
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        gap, _ = self.leader(state)
        safe = self.min_gap + state.v[:, 0] * self.min_time_headway
        shortfall = torch.relu(1.0 - gap / safe)
        reward = state.v.mean(-1) / self.speed_scale - self.headway_penalty * shortfall
        terminated = collided.any(-1)
        reward = torch.where(terminated, torch.full_like(reward, -1.0), reward)
        return reward, terminated, {"collision": terminated}
