"""Fit car-following parameters (IDM or Krauss) to observed trajectories by gradient, every driver
at once.

The data is a table of observations ``time, vehicle_id, lane, position, speed`` (s, -, lane index,
front bumper along the lane in m, m/s), sampled at one fixed interval. Leaders are inferred per
lane and time (the nearest vehicle ahead in the same lane). Each follower is *replayed* behind
its observed leader: starting from its first observed position and speed, the model and the
simulator's integration (:func:`difftraffic.dynamics.step`'s semi-implicit Euler,
``v' = max(0, v + acc dt)``, ``x' = x + v' dt``) drive it while the leader moves as observed. So
drivers calibrate independently, and all of them are fitted in one batched optimization: the
parameters of every driver (and every start) are one ``[K, D]`` tensor per parameter, kept inside
their bounds by a sigmoid, and Adam descends the replay error through the whole simulated
trajectory.

Which parameters the data identifies depends on what it excites: ``v0`` only shows when the
follower drives near its desired speed, ``b`` when it closes in on a slower leader, ``s0`` when
it stands behind one; a parameter the data does not excite comes back anywhere in its bounds with
a small error. Parameters without default search bounds keep their model default: the IDM's
``delta`` stays at 4 (the usual choice; it trades off against ``v0``), Krauss's ``sigma`` at 0
(the fit is deterministic) and ``b_emergency`` at 9 m/s^2.
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
    return torch.stack(gaps, -1), torch.stack(speeds, -1)


@dataclass
class CalibrationResult:
    """Fitted parameters and errors, one entry per follower.

    Attributes:
        vehicle_ids, leader_ids: the followers and the leaders they were replayed behind.
        params: name -> ``[D]`` fitted value (SI units, see :func:`search_bounds`).
        gap_rmse, speed_rmse: ``[D]`` replay errors of the fitted parameters (m, m/s).
        steps: ``[D]`` observed steps each follower was fitted on.
        iterations: optimizer iterations run; ``stopped_early`` when the time limit cut them.
    """

    vehicle_ids: list[str]
    leader_ids: list[str]
    params: dict[str, Tensor]
    gap_rmse: Tensor
    speed_rmse: Tensor
    steps: Tensor
    iterations: int
    stopped_early: bool = False
    history: list[float] = field(default_factory=list)

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
    """One stage of a fit: ``iterations`` Adam steps at ``learning_rate`` on replay windows of
    ``window`` steps (``None``: the whole replay), starting where the previous stage ended."""

    window: int | None
    iterations: int
    learning_rate: float


DEFAULT_SCHEDULE = (Stage(20, 600, 0.1), Stage(100, 200, 0.01), Stage(None, 100, 0.003))
"""Short windows first (fast, and a smooth loss that finds the basin from random starts), then
longer ones and the whole replay (measurement noise at a window's first observation biases short
windows; the whole replay does not restart from noisy states), each at a smaller rate so that
it refines rather than leaves what the previous stage found. A stage ends early once its loss
improves by less than 0.1 % over :data:`PLATEAU` iterations."""

PLATEAU = 50
"""Iterations over which a stage must improve its loss by 0.1 % to go on."""


def parse_schedule(text: str) -> tuple[Stage, ...]:
    """Stages from ``"WINDOW:ITERATIONS:RATE,..."`` (``WINDOW`` a step count or ``all``), e.g.
    ``"20:600:0.1,100:200:0.01,all:100:0.003"`` (:data:`DEFAULT_SCHEDULE`)."""
    stages = []
    for item in text.split(","):
        try:
            window, iterations, rate = item.split(":")
            stages.append(
                Stage(None if window == "all" else int(window), int(iterations), float(rate))
            )
        except ValueError:
            raise ValueError(
                f"schedule stage {item!r} must look like WINDOW:ITERATIONS:RATE, e.g. 20:600:0.1 "
                "(WINDOW a step count or 'all')"
            ) from None
    return tuple(stages)


def calibrate(
    data: Followers,
    model: str = "idm",
    objective: str = "gap",
    bounds: Mapping[str, tuple[float, float]] | None = None,
    starts: int = 4,
    schedule: Sequence[Stage] = DEFAULT_SCHEDULE,
    time_limit: float | None = None,
    seed: int = 0,
    progress: bool = True,
) -> CalibrationResult:
    """Fit one parameter set per follower, all followers and starts in one optimization.

    Args:
        data: followers from :func:`read_trajectories`.
        model: the car-following model fitted, ``"idm"`` or ``"krauss"``.
        objective: ``"gap"``, ``"speed"`` or ``"both"`` (:data:`OBJECTIVES`).
        bounds: name -> (low, high) for the fitted parameters (``v0, T, a, b, s0`` for both
            models); defaults :func:`search_bounds`.
        starts: random starting points per follower in the first stage (uniform in the bounds,
            from a generator seeded with ``seed``); each follower goes on with its best.
        schedule: the stages (:class:`Stage`): windows of a few steps, each replayed from its
            first observation (multiple shooting: sequential work of ``window`` steps instead of
            the trajectory's, and a loss that compounding over long replays does not make
            rugged), then longer windows and the whole replay. The reported errors are always
            those of the whole replay.
        time_limit: stop after this many seconds (the best so far is returned).
        progress: show a progress bar.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is invalid; valid values: {list(OBJECTIVES)}")
    model_cls = model_class(model)
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
        if stage.iterations < 1 or stage.learning_rate <= 0 or (stage.window or 2) < 2:
            raise ValueError(
                f"{stage} is invalid; valid: iterations >= 1, learning_rate > 0, window >= 2 "
                "or None"
            )
    generator = torch.Generator().manual_seed(seed)
    deadline = None if time_limit is None else time.monotonic() + time_limit
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(s.iterations for s in schedule), desc="calibrate", unit="it")
    fit = _Fit(data, model_cls, objective, bounds, generator)
    params: dict[str, Tensor] | None = None
    done, stopped, history = 0, False, list[float]()
    try:
        for index, stage in enumerate(schedule):
            params, ran, stopped = fit.run(
                stage, starts if index == 0 else 1, params, deadline, bar, history
            )
            done += ran
            if stopped:
                break
    finally:
        if bar is not None:
            bar.close()
    assert params is not None
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
        iterations=done,
        stopped_early=stopped,
        history=history,
    )


class _Fit:
    """The parts of a fit that every stage shares: data, objective, bounds, random starts."""

    def __init__(
        self,
        data: Followers,
        model: type[CarFollowingModel],
        objective: str,
        bounds: Mapping[str, tuple[float, float]],
        generator: torch.Generator,
    ) -> None:
        self.data, self.model, self.objective, self.generator = data, model, objective, generator
        dtype = data.position.dtype
        self.lower = {n: torch.tensor(b[0], dtype=dtype) for n, b in bounds.items()}
        self.span = {n: torch.tensor(b[1] - b[0], dtype=dtype) for n, b in bounds.items()}
        self.gap_scale = _observed_variance(data.gap, data.valid)
        self.speed_scale = _observed_variance(data.speed, data.valid)

    def run(
        self,
        stage: Stage,
        starts: int,
        initial: Mapping[str, Tensor] | None,
        deadline: float | None,
        bar: Any,
        history: list[float],
    ) -> tuple[dict[str, Tensor], int, bool]:
        """One stage; returns each follower's best parameters ``[D]``, the iterations run and
        whether the deadline cut the stage short."""
        data = self.data
        fit_data = data if stage.window is None else windows(data, stage.window)
        shape = (starts, len(data.vehicle_ids)) + ((1,) if stage.window is not None else ())
        fractions = {
            n: torch.rand(shape, generator=self.generator, dtype=data.position.dtype) * 0.8 + 0.1
            for n in self.lower
        }
        if initial is not None:  # the first start goes on from the previous stage
            for n in self.lower:
                given = (initial[n] - self.lower[n]) / self.span[n]
                fractions[n][0] = given.clamp(1e-6, 1 - 1e-6).reshape(fractions[n][0].shape)
        logits = {n: torch.logit(f).requires_grad_(True) for n, f in fractions.items()}

        def parameters() -> dict[str, Tensor]:
            return {n: self.lower[n] + self.span[n] * torch.sigmoid(z) for n, z in logits.items()}

        def loss_per_start() -> Tensor:
            gap, speed = replay(fit_data, self.model(**parameters()))
            gap_error, speed_error = _errors(fit_data, gap, speed)
            if self.objective == "gap":
                return gap_error
            if self.objective == "speed":
                return speed_error
            return gap_error / self.gap_scale + speed_error / self.speed_scale

        optimizer = torch.optim.Adam(list(logits.values()), lr=stage.learning_rate)
        done, stopped, plateaued, checkpoint = 0, False, False, math.inf
        while done < stage.iterations and not stopped and not plateaued:
            done += 1
            losses = loss_per_start()
            total = torch.nan_to_num(losses, nan=1e12).sum()
            grads = torch.autograd.grad(total, list(logits.values()))
            for z, grad in zip(logits.values(), grads, strict=True):
                z.grad = grad.nan_to_num(0.0, 0.0, 0.0)  # a start that blew up stays put
            optimizer.step()
            history.append(float(total.detach()) / losses.numel())
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"window {stage.window or 'all'}, loss {history[-1]:.4g}")
            stopped = deadline is not None and time.monotonic() > deadline
            if done % PLATEAU == 0:
                plateaued = history[-1] > checkpoint * (1 - 1e-3)
                checkpoint = history[-1]
        with torch.no_grad():
            best = torch.nan_to_num(loss_per_start(), nan=math.inf).argmin(0)
            return (
                {
                    n: v.reshape(shape[:2]).gather(0, best[None]).squeeze(0)
                    for n, v in parameters().items()
                },
                done,
                stopped,
            )
