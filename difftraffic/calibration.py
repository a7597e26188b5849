"""Fit car-following parameters (IDM or Krauss) to observed trajectories by gradient, every driver
at once.

The data is a table of observations ``time, vehicle_id, lane, position, speed`` (s, -, lane index,
front bumper along the lane in m, m/s), sampled at one fixed interval. Leaders are inferred per
lane and time (the nearest vehicle ahead in the same lane). Each follower is *replayed* behind
its observed leader: starting from its first observed position and speed, the model and the
simulator's integration (:func:`difftraffic.dynamics.step`'s semi-implicit Euler,
``v' = max(0, v + acc dt)``, ``x' = x + v' dt``) drive it while the leader moves as observed. So
drivers calibrate independently, and all of them are fitted in one batched optimization: the
parameters of every driver (and every start) are one ``[K, D, P]`` tensor, kept inside their
bounds by a sigmoid, and Levenberg–Marquardt fits them, with the Jacobian of every replayed step
from forward differences batched into the same simulation (or from automatic differentiation).

Which parameters the data identifies depends on what it excites: ``v0`` only shows when the
follower drives near its desired speed, ``b`` when it closes in on a slower leader, ``s0`` when
it stands behind one; a parameter the data does not excite comes back anywhere in its bounds with
a small error, but for a speed cap (Krauss's ``v0``), which comes back at the fastest replayed
speed, the lowest cap that replays the same. Parameters without default search bounds keep their
model default: the IDM's ``delta`` stays at 4 (the usual choice; it trades off against ``v0``),
Krauss's ``sigma`` at 0 (the fit is deterministic) and ``b_emergency`` at 9 m/s^2.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from difftraffic.car_following import CarFollowingModel, model_class
from difftraffic.dynamics import MIN_GAP
from difftraffic.road import Road
from difftraffic.state import TrafficState

__all__ = [
    "COLUMNS",
    "IDM_BOUNDS",
    "search_bounds",
    "DEFAULT_SCHEDULE",
    "MODEL_DEFAULTS",
    "SCREENING_SCHEDULE",
    "DERIVATIVES",
    "OBJECTIVES",
    "CalibrationResult",
    "Followers",
    "Stage",
    "calibrate",
    "parse_schedule",
    "read_trajectories",
    "replay",
    "write_trajectories",
]

COLUMNS = ("time", "vehicle_id", "lane", "position", "speed")
"""The columns a trajectory file must have (others are ignored)."""


def search_bounds(model: str) -> dict[str, tuple[float, float]]:
    """Default search bounds of the parameters calibration fits for ``model`` (``"idm"``,
    ``"krauss"``): name -> (low, high) in SI units (``Parameter.search`` of the model)."""
    return {
        name: spec.search
        for name, spec in model_class(model).PARAMETERS.items()
        if spec.search is not None
    }


IDM_BOUNDS = search_bounds("idm")
"""Default search bounds of the fitted IDM parameters (m/s, s, m/s², m/s², m)."""

DERIVATIVES = ("differences", "autodiff")
"""How calibration computes the Jacobian of the replay: batched forward differences or
automatic differentiation (see :func:`calibrate`)."""

OBJECTIVES = ("gap", "speed", "both")
"""What the fit matches: the gap to the leader (the literature's recommendation), the speed, or
both, each normalized by the variance of its observed series."""


@dataclass(frozen=True)
class Followers:
    """``D`` followers, each over the longest stretch it follows one leader, padded to ``T``.

    Attributes:
        vehicle_ids, leader_ids: ``D`` names as in the file.
        dt: sampling interval (s).
        position, speed: ``[D, T]`` the follower's observations (m, m/s).
        leader_position, leader_speed: ``[D, T]`` its leader's.
        valid: ``[D, T]`` bool, observed steps (padding repeats the last observation).
        vehicle_length: the leader's length (m) that turns positions into gaps.
    """

    vehicle_ids: list[str]
    leader_ids: list[str]
    dt: float
    position: Tensor
    speed: Tensor
    leader_position: Tensor
    leader_speed: Tensor
    valid: Tensor
    vehicle_length: float

    @property
    def gap(self) -> Tensor:
        """``[D, T]`` observed bumper-to-bumper gap (m)."""
        return self.leader_position - self.vehicle_length - self.position


def write_trajectories(
    path: str | Path,
    states: Sequence[TrafficState],
    road: Road,
    dt: float,
    world: int = 0,
    vehicle_ids: Sequence[str] | None = None,
) -> Path:
    """Write one world of simulated states as a trajectory CSV that :func:`read_trajectories`
    reads: a row per active vehicle and state, lane = the nearest lane centre.

    Args:
        states: the states at times ``0, dt, 2 dt, ...``, each ``[B, N]``.
        world: which of the ``B`` worlds.
        vehicle_ids: ``N`` names (default ``veh<slot>``).
    """
    if not states:
        raise ValueError("states is empty; write_trajectories needs at least one state")
    count = states[0].num_vehicles
    if not 0 <= world < states[0].batch_size:
        raise ValueError(f"world={world} is invalid; valid range: 0..{states[0].batch_size - 1}")
    names = [f"veh{slot}" for slot in range(count)] if vehicle_ids is None else list(vehicle_ids)
    if len(names) != count:
        raise ValueError(f"vehicle_ids has {len(names)} names for {count} vehicles")
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for k, state in enumerate(states):
            columns = zip(
                names,
                road.nearest_lane(state.y[world]).tolist(),
                state.x[world].tolist(),
                state.v[world].tolist(),
                state.active[world].tolist(),
                strict=True,
            )
            for name, lane, x, v, active in columns:
                if active:
                    writer.writerow([repr(k * dt), name, lane, repr(x), repr(v)])
    return path


def _row_error(path: Path, row: int, message: str) -> ValueError:
    return ValueError(f"{path}: row {row}: {message}")


def read_trajectories(
    path: str | Path,
    vehicle_length: float = 5.0,
    min_steps: int = 20,
    dtype: torch.dtype = torch.float64,
) -> Followers:
    """Read a trajectory CSV and pair every follower with its observed leader.

    Args:
        path: CSV with the columns of :data:`COLUMNS`.
        vehicle_length: length of every vehicle (m): gap = leader position − length − position.
        min_steps: a follower needs at least this many consecutive steps behind one leader.
        dtype: floating dtype of the tensors.

    Raises:
        ValueError: a missing column, a non-number or NaN (naming row and column), a time that
            goes backwards for a vehicle or an irregular sampling interval (naming the row), or
            no follower with ``min_steps`` steps behind one leader.
    """
    path = Path(path)
    if vehicle_length <= 0:
        raise ValueError(f"vehicle_length={vehicle_length} is invalid; valid range: > 0 (m)")
    if min_steps < 2:
        raise ValueError(f"min_steps={min_steps} is invalid; valid range: >= 2")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {missing}; a trajectory file needs {list(COLUMNS)}"
            )
        rows = list(reader)
    observations: dict[str, dict[float, tuple[int, float, float]]] = {}
    last_time: dict[str, float] = {}
    snapshots: dict[float, list[tuple[int, float, str]]] = {}  # time -> (lane, position, id)
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        values = {}
        for column in ("time", "lane", "position", "speed"):
            try:
                values[column] = float(row[column])
            except (TypeError, ValueError):
                raise _row_error(
                    path, number, f"{column}={row[column]!r} is not a number"
                ) from None
            if not math.isfinite(values[column]):
                raise _row_error(path, number, f"{column}={row[column]!r} is not finite")
        vehicle = row["vehicle_id"]
        if vehicle in last_time and values["time"] <= last_time[vehicle]:
            raise _row_error(
                path, number, f"time {values['time']} of vehicle {vehicle!r} does not increase"
            )
        last_time[vehicle] = values["time"]
        lane = int(values["lane"])
        observations.setdefault(vehicle, {})[values["time"]] = (
            lane,
            values["position"],
            values["speed"],
        )
        snapshots.setdefault(values["time"], []).append((lane, values["position"], vehicle))
    if len(observations) < 2:
        raise ValueError(
            f"{path}: {len(observations)} vehicle(s); calibration needs a follower and a leader"
        )
    ordered = sorted(snapshots)
    dt = ordered[1] - ordered[0] if len(ordered) > 1 else math.nan
    steps = [b - a for a, b in zip(ordered, ordered[1:], strict=False)]
    if not steps or max(steps) - min(steps) > 1e-6 * max(1.0, dt):
        raise ValueError(
            f"{path}: times must be sampled at one fixed interval, got steps "
            f"{sorted(set(steps))[:3]}"
        )
    index = {t: k for k, t in enumerate(ordered)}
    leaders = _leaders_by_time(snapshots)
    followers = _longest_stretches(leaders, index, min_steps)
    if not followers:
        raise ValueError(f"{path}: no vehicle follows one leader for {min_steps} consecutive steps")
    return _tensors(followers, observations, ordered, dt, vehicle_length, dtype)


def _leaders_by_time(
    snapshots: Mapping[float, list[tuple[int, float, str]]],
) -> dict[str, dict[float, str]]:
    """For each vehicle and time, the nearest vehicle ahead in its lane (if any), from each
    time's ``(lane, position, vehicle)`` observations."""
    leaders: dict[str, dict[float, str]] = {v: {} for seen in snapshots.values() for *_, v in seen}
    for t, seen in snapshots.items():
        ordered = sorted(seen)  # by lane, then position
        for (lane, _, follower), (lead_lane, _, leader) in zip(ordered, ordered[1:], strict=False):
            if lane == lead_lane:
                leaders[follower][t] = leader
    return leaders


def _longest_stretches(
    leaders: Mapping[str, Mapping[float, str]], index: Mapping[float, int], min_steps: int
) -> list[tuple[str, str, int, int]]:
    """``(follower, leader, first step, last step)`` of each follower's longest stretch of
    consecutive steps behind one leader, if at least ``min_steps`` long."""
    result = []
    for follower, by_time in leaders.items():
        best: tuple[int, str, int, int] | None = None
        run: tuple[str, int, int] | None = None
        for t in sorted(by_time, key=index.__getitem__):
            k, leader = index[t], by_time[t]
            if run is not None and run[0] == leader and run[2] == k - 1:
                run = (leader, run[1], k)
            else:
                run = (leader, k, k)
            length = run[2] - run[1] + 1
            if best is None or length > best[0]:
                best = (length, *run)
        if best is not None and best[0] >= min_steps:
            result.append((follower, best[1], best[2], best[3]))
    return sorted(result)


def _tensors(
    followers: list[tuple[str, str, int, int]],
    observations: Mapping[str, Mapping[float, tuple[int, float, float]]],
    times: list[float],
    dt: float,
    vehicle_length: float,
    dtype: torch.dtype,
) -> Followers:
    horizon = max(last - first + 1 for _, _, first, last in followers)
    series: dict[str, list[list[float]]] = {k: [] for k in ("x", "v", "xl", "vl", "valid")}
    for follower, leader, first, last in followers:
        stretch = [times[k] for k in range(first, last + 1)]
        padded = stretch + [stretch[-1]] * (horizon - len(stretch))
        series["x"].append([observations[follower][t][1] for t in padded])
        series["v"].append([observations[follower][t][2] for t in padded])
        series["xl"].append([observations[leader][t][1] for t in padded])
        series["vl"].append([observations[leader][t][2] for t in padded])
        series["valid"].append([1.0] * len(stretch) + [0.0] * (horizon - len(stretch)))
    as_tensor = {k: torch.tensor(v, dtype=dtype) for k, v in series.items()}
    return Followers(
        vehicle_ids=[f for f, _, _, _ in followers],
        leader_ids=[leader for _, leader, _, _ in followers],
        dt=dt,
        position=as_tensor["x"],
        speed=as_tensor["v"],
        leader_position=as_tensor["xl"],
        leader_speed=as_tensor["vl"],
        valid=as_tensor["valid"] > 0.5,
        vehicle_length=vehicle_length,
    )


def windows(data: Followers, length: int) -> Followers:
    """The same observations cut into windows of ``length`` steps: tensors ``[D, W, length]``
    (the last window padded, its padding not valid), so that :func:`replay` restarts every
    window from its first observation (multiple shooting)."""
    steps = data.position.shape[-1]
    count = -(-steps // length)
    pad = count * length - steps

    def cut(series: Tensor, padding: Tensor) -> Tensor:
        padded = torch.cat([series, padding.expand(*series.shape[:-1], pad)], -1)
        return padded.reshape(*series.shape[:-1], count, length)

    def repeat_last(series: Tensor) -> Tensor:
        return cut(series, series[..., -1:])

    return replace(
        data,
        position=repeat_last(data.position),
        speed=repeat_last(data.speed),
        leader_position=repeat_last(data.leader_position),
        leader_speed=repeat_last(data.leader_speed),
        valid=cut(data.valid, torch.zeros_like(data.valid[..., -1:])),
    )


def _single_precision(data: Followers) -> Followers:
    """The same observations in float32, positions measured from each follower's first
    observation in each series (``[D, T]``) or window (``[D, W, L]``): float32 resolves about
    0.1 mm at a window's few hundred metres, against a centimetre at the kilometres a trajectory
    has covered."""
    origin = data.position[..., :1]
    return replace(
        data,
        position=(data.position - origin).float(),
        speed=data.speed.float(),
        leader_position=(data.leader_position - origin).float(),
        leader_speed=data.leader_speed.float(),
    )


def replay(data: Followers, params: CarFollowingModel) -> tuple[Tensor, Tensor]:
    """Simulate every follower behind its observed leader from its first observation.

    Args:
        data: the followers, tensors ``[D, T]`` (or ``[D, W, T]`` from :func:`windows`).
        params: a model's parameters broadcastable to the tensors without their last dimension,
            with leading dimensions for several parameter sets at once (starts ``[K, D]``, or
            ``[K, D, 1]`` for windows).

    Returns:
        ``(gap, speed)``, each ``[..., T]``: the simulated gap to the observed leader (m) and
        speed (m/s); step 0 is the observation itself.
    """
    position, speed = data.position[..., 0], data.speed[..., 0]
    broadcast = sum(
        (
            torch.zeros_like(torch.as_tensor(v, dtype=position.dtype))
            for v in params.tensors().values()
        ),
        start=torch.zeros((), dtype=position.dtype),
    )
    position, speed = position + broadcast, speed + broadcast
    gaps, speeds = [], []
    for k in range(data.position.shape[-1]):
        gap = data.leader_position[..., k] - data.vehicle_length - position
        gaps.append(gap)
        speeds.append(speed)
        acceleration = params.acceleration(
            speed, data.leader_speed[..., k], gap.clamp_min(MIN_GAP), None, data.dt
        )
        speed = torch.relu(speed + acceleration * data.dt)
        position = position + speed * data.dt
    return torch.stack(gaps).movedim(0, -1), torch.stack(speeds).movedim(0, -1)


@dataclass
class CalibrationResult:
    """Fitted parameters and errors, one entry per follower.

    Attributes:
        vehicle_ids, leader_ids: the followers and the leaders they were replayed behind.
        params: name -> ``[D]`` fitted value (SI units, see :func:`search_bounds`).
        gap_rmse, speed_rmse: ``[D]`` replay errors of the fitted parameters (m, m/s).
        steps: ``[D]`` observed steps each follower was fitted on.
        iterations: Levenberg–Marquardt iterations run; ``stopped_early`` when the time limit
            cut them.
        replays: follower trajectories simulated (the windows that tile a trajectory count as
            one; each iteration replays every start at its trial step and, for the Jacobian,
            once per fitted parameter, all in one batched simulation).
        history: mean error (sum of squared residuals per driver) after each iteration.
        trace: ``(seconds, [D] error)`` before and after each iteration of the whole-replay
            stage: the time since the fit began and each driver's best error per observed step
            over its starts (for ``objective="gap"`` the gap MSE, m^2), so that the time the fit
            took to reach a given error can be read off (``benchmarks/calibration.py``).
    """

    vehicle_ids: list[str]
    leader_ids: list[str]
    params: dict[str, Tensor]
    gap_rmse: Tensor
    speed_rmse: Tensor
    steps: Tensor
    iterations: int
    replays: int = 0
    stopped_early: bool = False
    history: list[float] = field(default_factory=list)
    trace: list[tuple[float, Tensor]] = field(default_factory=list)

    def rows(self) -> list[dict[str, float | str]]:
        """One mapping per follower: ids, parameters, errors."""
        return [
            {
                "vehicle_id": vehicle,
                "leader_id": self.leader_ids[d],
                **{name: float(value[d]) for name, value in self.params.items()},
                "gap_rmse": float(self.gap_rmse[d]),
                "speed_rmse": float(self.speed_rmse[d]),
                "steps": int(self.steps[d]),
            }
            for d, vehicle in enumerate(self.vehicle_ids)
        ]

    def save(self, path: str | Path) -> Path:
        """Write :meth:`rows` as CSV, or as JSON when ``path`` ends in ``.json``."""
        path = Path(path)
        rows = self.rows()
        if path.suffix == ".json":
            path.write_text(json.dumps(rows, indent=2) + "\n")
        else:
            with path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        return path


def _masked_mean(series: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``series [..., D, *steps]`` over each follower's observed steps, ``[..., D]``;
    ``valid [D, *steps]`` (``steps`` is ``T``, or windows ``W, L``)."""
    dims = tuple(range(1 - valid.dim(), 0))
    return (series * valid).sum(dims) / valid.sum(dims)


def _errors(data: Followers, gap: Tensor, speed: Tensor) -> tuple[Tensor, Tensor]:
    """Per-follower mean squared gap and speed error over its observed steps, ``[..., D]``."""
    return (
        _masked_mean((gap - data.gap) ** 2, data.valid),
        _masked_mean((speed - data.speed) ** 2, data.valid),
    )


def _observed_variance(series: Tensor, valid: Tensor) -> Tensor:
    """Variance of ``series [D, T]`` over each follower's observed steps, ``[D]`` (never 0)."""
    mean = _masked_mean(series, valid)
    return _masked_mean((series - mean[:, None]) ** 2, valid) + 1e-6


@dataclass(frozen=True)
class Stage:
    """One stage of a fit: at most ``iterations`` Levenberg–Marquardt iterations on replay
    windows of ``window`` steps (``None``: the whole replay), starting where the previous stage
    ended; ``single`` replays in float32 (:func:`_single_precision`), a stage that only has to
    find each driver's basin."""

    window: int | None
    iterations: int
    single: bool = False


DEFAULT_SCHEDULE = (Stage(100, 10, single=True), Stage(None, 20))
"""Windows of 10 s first (sequential work of 100 steps instead of the trajectory's, and a residual
that errors compounding over minutes of replay do not make rugged, so the starts find the basin;
5 s windows let measurement noise pull some drivers into a basin at a bound), then the whole
replay, which removes the bias that measurement noise at each window's first observation gives
windows. The windows are replayed in float32: with every start, window and perturbed replay in
one batch their replay is bound by arithmetic, not by per-operation overhead (on the benchmark's
IDM platoons, the same fits in 15-30 % less time to the final error on noisy data, seeds 0-4,
28-38 % on clean data, seeds 0-2; CMA-ES's batch of 108 replays costs the same in float32 as in
float64). Krauss's defaults keep float64 (:data:`SCREENING_SCHEDULE`). A stage ends early once
no driver's error improves by more than :data:`TOLERANCE` (relative) for three iterations: its
best start's error, as starts far from any driver's best can go on improving slowly without
changing the fit."""

SCREENING_SCHEDULE = (Stage(100, 3), Stage(100, 10), Stage(None, 20))
""":data:`DEFAULT_SCHEDULE` with a first screening stage: three iterations from many starts on
10 s windows, after which each driver's best :data:`KEEP` go on (cheaper than carrying every
start through all iterations), every stage in float64: in float32 the fit of one noisy driver
in 4 of 6 SUMO platoons ended 1-7 % higher (Krauss's safe speed subtracts nearly equal terms,
which single precision leaves too coarse for forward differences)."""

MODEL_DEFAULTS: Mapping[str, tuple[int, tuple[Stage, ...]]] = {
    "idm": (16, DEFAULT_SCHEDULE),
    "krauss": (128, SCREENING_SCHEDULE),
}
"""Default ``(starts, schedule)`` per model. Krauss's next speed is the minimum of its free,
safe and braking speeds, so its error surface has kinks and plateaus where a parameter's branch
is inactive, and 16 starts left about one clean-data driver in four platoons in a local minimum;
128 screened starts recovered every identified parameter of the SUMO benchmark's platoons
(``docs/calibration.md``). Other models get the IDM's."""

EXACT = 1e-6
"""Residual RMS (m for the gap, m/s for the speed) below which a driver counts as fitted
exactly (clean data; the fit stops there instead of polishing to machine precision)."""

KEEP = 8
"""Starts per driver that go on to the next stage: the windows' error, biased by measurement
noise at each window's first observation, can rank the start nearest the truth second or
third."""

TOLERANCE = 1e-4
"""Relative improvement of a driver's error below which an iteration counts as converged (the
gap RMSE then changes by less than 0.005 %)."""


def parse_schedule(text: str) -> tuple[Stage, ...]:
    """Stages from ``"WINDOW:ITERATIONS[:single],..."`` (``WINDOW`` a step count or ``all``;
    ``single``: replayed in float32), e.g. ``"100:10:single,all:20"``
    (:data:`DEFAULT_SCHEDULE`)."""
    stages = []
    for item in text.split(","):
        try:
            window, iterations, *precision = item.split(":")
            if precision not in ([], ["single"]):
                raise ValueError
            stage = Stage(
                None if window == "all" else int(window), int(iterations), bool(precision)
            )
        except ValueError:
            raise ValueError(
                f"schedule stage {item!r} must look like WINDOW:ITERATIONS[:single], e.g. 100:10 "
                "or 100:10:single (WINDOW a step count or 'all')"
            ) from None
        stages.append(stage)
    return tuple(stages)


def calibrate(
    data: Followers,
    model: str = "idm",
    objective: str = "gap",
    bounds: Mapping[str, tuple[float, float]] | None = None,
    starts: int | None = None,
    schedule: Sequence[Stage] | None = None,
    time_limit: float | None = None,
    seed: int = 0,
    progress: bool = True,
    derivatives: str = "differences",
) -> CalibrationResult:
    """Fit one parameter set per follower by Levenberg–Marquardt, all followers and starts in
    one batched optimization.

    Each iteration takes a damped Gauss–Newton step per driver and start from the Jacobian of
    its residuals (``[K, D, steps, P]``), replays the step together with its own Jacobian, and
    keeps it where it lowers that driver's error (the damping follows Nielsen's rule: it shrinks
    after a kept step by how well the linear model predicted the gain, and grows ever faster
    after rejected ones).

    Args:
        data: followers from :func:`read_trajectories`.
        model: the car-following model fitted, ``"idm"`` or ``"krauss"``.
        objective: ``"gap"``, ``"speed"`` or ``"both"`` (:data:`OBJECTIVES`).
        bounds: name -> (low, high) for the fitted parameters (``v0, T, a, b, s0`` for both
            models); defaults :func:`search_bounds`.
        starts: starting points per follower in the first stage (a scrambled Sobol sequence
            seeded with ``seed`` over the middle 80 % of the bounds, which covers them more
            evenly than uniform draws); each follower goes on with its best :data:`KEEP`.
            Default: the model's in :data:`MODEL_DEFAULTS` (16 for the IDM, 128 for Krauss).
        schedule: the stages (:class:`Stage`): windows of a few seconds, each replayed from its
            first observation (multiple shooting), then the whole replay. The reported errors
            are always those of the whole replay. Default: the model's in
            :data:`MODEL_DEFAULTS`.
        time_limit: stop after this many seconds (the best so far is returned).
        progress: show a progress bar.
        derivatives: how the Jacobian is computed (:data:`DERIVATIVES`): ``"differences"``
            (default), forward differences with the ``P`` perturbed replays in the same batched
            simulation as the step's own (relative error ~1e-8 in float64; the fastest, as a
            replay of ``P + 1`` times the batch costs little more than one, the replay being
            bound by per-operation overhead), or ``"autodiff"``, exact, by automatic
            differentiation through the replay (reverse over reverse; 2-10 times slower on CPU,
            see ``docs/calibration.md``).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is invalid; valid values: {list(OBJECTIVES)}")
    if derivatives not in DERIVATIVES:
        raise ValueError(
            f"derivatives={derivatives!r} is invalid; valid values: {list(DERIVATIVES)}"
        )
    model_cls = model_class(model)
    default_starts, default_schedule = MODEL_DEFAULTS.get(model_cls.NAME, MODEL_DEFAULTS["idm"])
    starts = default_starts if starts is None else starts
    schedule = default_schedule if schedule is None else schedule
    defaults = search_bounds(model)
    bounds = dict(defaults if bounds is None else bounds)
    if set(bounds) != set(defaults):
        raise ValueError(f"bounds must name exactly {sorted(defaults)}, got {sorted(bounds)}")
    for name, (low, high) in bounds.items():
        if not low < high or (name != "s0" and low <= 0) or low < 0:
            raise ValueError(
                f"bounds[{name!r}]=({low}, {high}) is invalid; valid: 0 <= low < high "
                "(low > 0 but for s0)"
            )
    if starts < 1:
        raise ValueError(f"starts={starts} is invalid; valid range: >= 1")
    if not schedule:
        raise ValueError("schedule is empty; it needs at least one Stage")
    for stage in schedule:
        if stage.iterations < 1 or (stage.window or 2) < 2:
            raise ValueError(f"{stage} is invalid; valid: iterations >= 1, window >= 2 or None")
    fit = _Fit(data, model_cls, objective, bounds, derivatives, time_limit)
    drivers = len(data.vehicle_ids)
    sobol = torch.quasirandom.SobolEngine(len(bounds), scramble=True, seed=seed)  # type: ignore[no-untyped-call]
    points = sobol.draw(starts * drivers, dtype=data.position.dtype)
    fractions = points.reshape(drivers, starts, len(bounds)).transpose(0, 1) * 0.8 + 0.1
    logits = torch.logit(fractions)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(s.iterations for s in schedule), desc="calibrate", unit="it")
    try:
        for index, stage in enumerate(schedule):
            keep = 1 if index == len(schedule) - 1 else KEEP
            if stage.window is None:
                logits = fit.tighten_speed_cap(logits)
            logits = fit.levenberg_marquardt(stage, logits, keep, bar)
            if fit.out_of_time():
                break
    finally:
        if bar is not None:
            bar.close()
    params = fit.parameters(fit.tighten_speed_cap(logits[:1])[0])
    with torch.no_grad():
        gap, speed = replay(data, model_cls(**params))
        gap_error, speed_error = _errors(data, gap, speed)
    return CalibrationResult(
        vehicle_ids=list(data.vehicle_ids),
        leader_ids=list(data.leader_ids),
        params=params,
        gap_rmse=gap_error.sqrt(),
        speed_rmse=speed_error.sqrt(),
        steps=data.valid.sum(-1),
        iterations=fit.iterations,
        replays=fit.replays,
        stopped_early=fit.out_of_time(),
        history=fit.history,
        trace=fit.trace,
    )


def _sum_of_squares(residual: Tensor) -> Tensor:
    """``[..., D]`` sum over the last dimension of squared residuals, ``inf`` where any is not
    finite (a replay that blew up never counts as an improvement)."""
    return torch.nan_to_num((residual**2).sum(-1), nan=math.inf, posinf=math.inf)


def _nielsen_damping(
    damping: Tensor, growth: Tensor, gain: Tensor, better: Tensor
) -> tuple[Tensor, Tensor]:
    """Nielsen's damping update (Madsen, Nielsen & Tingleff 2004, *Methods for non-linear least
    squares problems*, section 3.2): after a kept step the damping shrinks by up to 3x as the actual
    gain approaches the predicted one (``gain``, their ratio), after a rejected step it grows by
    ``growth``, which doubles with every consecutive rejection. Returns ``(damping, growth)``."""
    shrink = (1 - (2 * gain - 1) ** 3).clamp_min(1 / 3)
    damping = torch.where(better, damping * shrink, damping * growth).clamp(1e-9, 1e9)
    return damping, torch.where(better, 2.0, growth * 2)


class _Fit:
    """A fit's data, objective, bounds and clock, and the Levenberg–Marquardt iteration.

    Parameters live as logits ``z [..., D, P]`` (``P`` fitted parameters in the order of
    ``bounds``); a value is ``low + (high - low) sigmoid(z)``, so every step stays in bounds."""

    def __init__(
        self,
        data: Followers,
        model: type[CarFollowingModel],
        objective: str,
        bounds: Mapping[str, tuple[float, float]],
        derivatives: str,
        time_limit: float | None,
    ) -> None:
        self.data, self.model, self.objective = data, model, objective
        self.derivatives = derivatives
        dtype = data.position.dtype
        self.names = list(bounds)
        self.lower = torch.tensor([bounds[n][0] for n in self.names], dtype=dtype)
        self.span = torch.tensor([bounds[n][1] - bounds[n][0] for n in self.names], dtype=dtype)
        # residuals of "both" are scaled so that each series weighs by its observed variance
        self.gap_weight = _observed_variance(data.gap, data.valid).rsqrt()
        self.speed_weight = _observed_variance(data.speed, data.valid).rsqrt()
        self.deadline = None if time_limit is None else time.monotonic() + time_limit
        self.iterations, self.replays, self.history = 0, 0, list[float]()
        self.started = time.perf_counter()
        self.trace = list[tuple[float, Tensor]]()

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def parameters(self, logits: Tensor) -> dict[str, Tensor]:
        """``{name: [...]}`` parameter values of logits ``[..., P]``."""
        lower, span = self.lower.to(logits.dtype), self.span.to(logits.dtype)
        values = lower + span * torch.sigmoid(logits)
        return {name: values[..., i] for i, name in enumerate(self.names)}

    def tighten_speed_cap(self, logits: Tensor) -> Tensor:
        """Logits ``[K, D, P]`` with the model's speed cap (:attr:`CarFollowingModel.SPEED_CAP`)
        lowered to the fastest speed of each whole replay where it is above: the same replay,
        but a cap at its edge, so that the next steps see it bind. Unchanged for models
        without one."""
        name = self.model.SPEED_CAP
        if name is None:
            return logits
        index = self.names.index(name)
        with torch.no_grad():
            params = self.parameters(logits)
            _, speed = replay(self.data, self.model(**params))
            self.replays += math.prod(logits.shape[:2])
            fastest = speed.masked_fill(~self.data.valid, 0.0).amax(-1)
            cap = torch.minimum(params[name], fastest)
            fraction = (cap - self.lower[index]) / self.span[index]
            tiny = torch.finfo(logits.dtype).eps
            tightened = logits.clone()
            tightened[..., index] = torch.logit(fraction.clamp(tiny, 1 - tiny))
        return tightened

    def residuals(self, data: Followers, logits: Tensor) -> Tensor:
        """``[..., D, M]`` residuals of every replayed step (0 where not observed) for logits
        ``[..., D, P]``; ``data`` whole (``M = T``) or in windows (``M = W * L``)."""
        windowed = data.position.dim() == 3
        params = self.parameters(logits.unsqueeze(-2) if windowed else logits)
        gap, speed = replay(data, self.model(**params))

        def residual(simulated: Tensor, observed: Tensor) -> Tensor:
            masked = (simulated - observed) * data.valid
            return masked.flatten(-2) if windowed else masked

        if self.objective == "gap":
            return residual(gap, data.gap)
        if self.objective == "speed":
            return residual(speed, data.speed)
        return torch.cat(
            [
                residual(gap, data.gap) * self.gap_weight[:, None].to(gap.dtype),
                residual(speed, data.speed) * self.speed_weight[:, None].to(speed.dtype),
            ],
            -1,
        )

    def jacobian(self, data: Followers, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Residuals ``[K, D, M]`` and their Jacobian ``[K, D, M, P]`` at logits ``[K, D, P]``:
        by forward differences, every perturbed replay in one batched simulation, or by automatic
        differentiation (reverse over reverse: the Jacobian-vector products of the ``P`` unit
        tangents from the double backward of the replay)."""
        count = logits.shape[-1]
        identity = torch.eye(count, dtype=logits.dtype).reshape(count, 1, 1, count)
        if self.derivatives == "differences":
            step = torch.finfo(logits.dtype).eps ** 0.5
            perturbed = torch.cat([logits[None], logits + step * identity])
            self.replays += math.prod(perturbed.shape[:3])
            with torch.no_grad():
                residual = self.residuals(data, perturbed)
            return residual[0], ((residual[1:] - residual[0]) / step).movedim(0, -1)
        with torch.enable_grad():
            expanded = logits.expand(count, *logits.shape).clone().requires_grad_(True)
            self.replays += math.prod(expanded.shape[:3])
            residual = self.residuals(data, expanded)
            cotangent = torch.zeros_like(residual, requires_grad=True)
            (vjp,) = torch.autograd.grad(residual, expanded, cotangent, create_graph=True)
            (jvp,) = torch.autograd.grad(vjp, cotangent, identity.expand_as(expanded))
        return residual[0].detach(), jvp.movedim(0, -1)

    def _record(self, stage: Stage, best: Tensor, observed: Tensor) -> None:
        """Add the whole-replay stage's best errors per observed step to the trace."""
        if stage.window is None:
            self.trace.append((time.perf_counter() - self.started, best / observed))

    def levenberg_marquardt(self, stage: Stage, logits: Tensor, keep: int, bar: Any) -> Tensor:
        """Up to ``stage.iterations`` iterations on logits ``[K, D, P]``; returns
        ``[min(keep, K), D, P]``, each driver's starts with the lowest errors on what the stage
        fitted, best first."""
        data = self.data if stage.window is None else windows(self.data, stage.window)
        if stage.single:
            data = _single_precision(data)
        precision, logits = logits.dtype, logits.to(data.position.dtype)
        count = logits.shape[-1]
        damping = torch.full(logits.shape[:-1], 1e-2, dtype=logits.dtype)
        growth = torch.full_like(damping, 2.0)
        identity = torch.eye(count, dtype=logits.dtype)
        residual, jacobian = self.jacobian(data, logits)
        loss = _sum_of_squares(residual)
        best, quiet = loss.min(0).values, 0
        # a driver replayed to within EXACT (RMS) has nothing left to improve
        observed = data.valid.flatten(1).sum(-1)
        exact_loss = EXACT**2 * observed
        self._record(stage, best, observed)
        for _ in range(stage.iterations):
            clean = jacobian.nan_to_num(0.0, 0.0, 0.0)
            normal = clean.transpose(-1, -2) @ clean
            gradient = (clean.transpose(-1, -2) @ residual.nan_to_num(0.0)[..., None])[..., 0]
            scale = torch.diagonal(normal, dim1=-2, dim2=-1)[..., None] * identity + 1e-9 * identity
            step, info = torch.linalg.solve_ex(normal + damping[..., None, None] * scale, -gradient)
            step = torch.where(info[..., None] == 0, step, 0.0).nan_to_num(0.0)
            trial = logits + step
            # the Jacobian at the trial point: the next iteration's where the step is kept
            trial_residual, trial_jacobian = self.jacobian(data, trial)
            trial_loss = _sum_of_squares(trial_residual)
            better = trial_loss < loss
            # the decrease of the error the linearized residuals promise for this step
            predicted = step * (damping[..., None] * (scale @ step[..., None])[..., 0] - gradient)
            gain = (loss - trial_loss) / predicted.sum(-1).clamp_min(torch.finfo(loss.dtype).tiny)
            damping, growth = _nielsen_damping(damping, growth, gain, better)
            logits = torch.where(better[..., None], trial, logits)
            residual = torch.where(better[..., None], trial_residual, residual)
            jacobian = torch.where(better[..., None, None], trial_jacobian, jacobian)
            loss = torch.where(better, trial_loss, loss)
            self.iterations += 1
            self.history.append(float(loss[torch.isfinite(loss)].mean()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"window {stage.window or 'all'}, error {self.history[-1]:.4g}")
            best, previous_best = loss.min(0).values, best
            self._record(stage, best, observed)
            improved = ((previous_best - best) > TOLERANCE * best) & (best > exact_loss)
            quiet = 0 if bool(improved.any()) else quiet + 1
            if quiet == 3 or self.out_of_time():
                break
        order = loss.argsort(0)[:keep]
        return logits.gather(0, order[..., None].expand(-1, -1, count)).to(precision)
