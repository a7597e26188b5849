"""Calibration on platoons recorded in SUMO: ours against CMA-ES and differential evolution.

For each model (IDM, Krauss) and seed, SUMO (libsumo, the ``bench`` extra) simulates 12 followers
with parameters drawn per driver behind a leader whose speed is imposed (stop and go, then up to
30 m/s so that the desired speed shows), configured so that its models are difftraffic's
(``benchmarks/validate_sumo.py``). The recording is written as a trajectory CSV, clean and with
measurement noise (0.3 m on positions, 0.2 m/s on speeds), and fitted three ways on the same
objective (each follower's whole-replay gap MSE behind its observed leader) and bounds:

- **ours**: :func:`difftraffic.calibration.calibrate` with its defaults (Levenberg–Marquardt,
  every driver and start in one batched optimization);
- **CMA-ES** (the ``cma`` package, the gradient-free method practice uses): one per driver,
  population 9, every driver's population evaluated in one batched replay per generation;
- **DE**: differential evolution (``scipy.optimize.differential_evolution``, the genetic family
  of the calibration literature), population 50, one driver after another (scipy has no
  ask/tell), each generation one batched replay.

The gradient-free methods stop per driver once their best objective is within 1 % of ours or
below (1 mm)², whichever is larger (clean data lets ours go far below that), or at their
budget. Ours runs to its own convergence; its trace (:attr:`CalibrationResult.trace`) gives the
time it first had every driver at that same target, the comparison "to the same objective".
Parameter errors are reported for the parameters each trajectory identifies: those
whose 2 % change moves the replayed gap by more than 1 cm RMS (a Krauss driver that never
reaches ``v0`` does not reveal it).

Usage::

    python benchmarks/calibration.py                  # IDM and Krauss, seeds 0-2
    python benchmarks/calibration.py --models idm --seeds 0 --methods ours cma
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from validate_sumo import Platoon, simulate, write_network, write_routes

from difftraffic.calibration import (
    Followers,
    _errors,
    calibrate,
    read_trajectories,
    replay,
    search_bounds,
)
from difftraffic.car_following import model_class
from difftraffic_rl import sweep

Tensor = torch.Tensor

NAMES = ("v0", "T", "a", "b", "s0")
DRIVERS = 12
SHARED = {"v0": (24.0, 34.0), "T": (0.8, 1.8), "a": (1.0, 2.5), "s0": (1.5, 3.0)}
RANGES = {
    "idm": {**SHARED, "b": (1.5, 3.5)},
    # SUMO's Krauss estimates the leader's braking distance with the larger of the two drivers'
    # decelerations, difftraffic's with the follower's own: the same when every driver shares b
    "krauss": {**SHARED, "b": (4.5, 4.5)},
}
PROFILE = [
    (0.0, 10.0),
    (5.0, 10.0),
    (11.0, 0.0),
    (16.0, 0.0),
    (28.0, 30.0),
    (40.0, 30.0),
    (46.0, 6.0),
    (50.0, 6.0),
    (60.0, 16.0),
]
"""The leader's speed (time s, m/s): slows to a stop, waits, speeds up to 30 m/s, brakes hard."""

MATCH = 1.01
FLOOR = 1e-6
"""A gradient-free method is done with a driver at ``max(MATCH × ours, FLOOR)`` gap MSE (m²)."""

TIE = 1.0000001
"""Relative slack of 'at the target' for the same error computed in two batch shapes."""

EXCITED = 0.01
"""A parameter is identified by a trajectory when changing it by 2 % moves the replayed gap by
more than this RMS (m)."""


def record(folder: Path, model: str, seed: int, noisy: bool) -> tuple[Path, dict[str, Tensor]]:
    """Simulate the platoon in SUMO, write its trajectory CSV; returns the path and the true
    parameters ``{name: [DRIVERS]}`` in the order the CSV's reader lists the followers."""
    generator = torch.Generator().manual_seed(seed)
    truth = {
        n: low + (high - low) * torch.rand(DRIVERS, generator=generator, dtype=torch.float64)
        for n, (low, high) in RANGES[model].items()
    }
    gaps = (15.0 + 15.0 * torch.rand(DRIVERS, generator=generator)).tolist()
    followers = [
        {"model": model, **{n: float(truth[n][d]) for n in NAMES}, "delta": 4.0}
        for d in range(DRIVERS)
    ]
    platoon = Platoon(
        f"{model}_{seed}", followers, gaps, PROFILE, lane_speed=40.0, leader_start=600.0
    )
    net = write_network(folder, speed=platoon.lane_speed)
    routes, ids = write_routes(folder, platoon)
    rows = simulate(net, routes, ids, platoon)
    noise = torch.Generator().manual_seed(seed + 1000)
    path = folder / f"{model}_{seed}_{'noisy' if noisy else 'clean'}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "vehicle_id", "lane", "position", "speed"])
        for row in rows:
            for slot, vehicle in enumerate(ids):
                x, v = row[1 + 2 * slot], row[2 + 2 * slot]
                if noisy:
                    dx, dv = torch.randn(2, generator=noise, dtype=torch.float64).tolist()
                    x, v = x + 0.3 * dx, max(0.0, v + 0.2 * dv)
                writer.writerow([f"{row[0]:.1f}", vehicle, 0, repr(x), repr(v)])
    data = read_trajectories(path)
    order = [ids.index(vehicle) - 1 for vehicle in data.vehicle_ids]
    return path, {n: truth[n][order] for n in NAMES}


def replay_mse(data: Followers, model: str, params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Whole-replay gap and speed MSE per follower, each ``[..., D]`` for parameters
    ``[..., D]``."""
    with torch.no_grad():
        gap, speed = replay(data, model_class(model)(**params))
        return _errors(data, gap, speed)


def gap_mse(data: Followers, model: str, params: dict[str, Tensor]) -> Tensor:
    """Whole-replay gap MSE per follower (the objective every method minimizes)."""
    return replay_mse(data, model, params)[0]


def scaled(model: str) -> tuple[np.ndarray, np.ndarray]:
    """Lower bounds and spans of the search box, in the order of :data:`NAMES`."""
    bounds = search_bounds(model)
    low = np.array([bounds[n][0] for n in NAMES])
    return low, np.array([bounds[n][1] for n in NAMES]) - low


def from_unit(model: str, unit: np.ndarray) -> dict[str, Tensor]:
    """Parameters ``{name: [...]}`` of points ``[..., 5]`` of the unit box."""
    low, span = scaled(model)
    values = low + span * unit
    return {n: torch.tensor(values[..., i]) for i, n in enumerate(NAMES)}


def fit_cma(data: Followers, model: str, targets: Tensor, budget: int, seed: int) -> dict[str, Any]:
    """Lockstep CMA-ES, one per driver, each generation's populations in one batched replay."""
    import cma

    drivers = len(data.vehicle_ids)
    options = {"bounds": [0.0, 1.0], "popsize": 9, "seed": seed + 1, "verbose": -9}
    strategies = [cma.CMAEvolutionStrategy([0.5] * 5, 0.3, options) for _ in range(drivers)]
    best, best_x = np.full(drivers, np.inf), np.zeros((drivers, 5))
    replays, start = 0, time.perf_counter()
    while replays < budget and not (best <= targets.numpy()).all():
        asked = [s.ask() for s in strategies]
        population = np.stack([np.stack(a) for a in asked], 1)  # [popsize, D, 5]
        losses = gap_mse(data, model, from_unit(model, population)).numpy()
        replays += losses.size
        for d, strategy in enumerate(strategies):
            strategy.tell(asked[d], losses[:, d].tolist())
            k = int(losses[:, d].argmin())
            if losses[k, d] < best[d]:
                best[d], best_x[d] = losses[k, d], population[k, d]
    return {"seconds": time.perf_counter() - start, "replays": replays, "unit": best_x}


def one_driver(data: Followers, d: int) -> Followers:
    return replace(
        data,
        vehicle_ids=data.vehicle_ids[d : d + 1],
        leader_ids=data.leader_ids[d : d + 1],
        position=data.position[d : d + 1],
        speed=data.speed[d : d + 1],
        leader_position=data.leader_position[d : d + 1],
        leader_speed=data.leader_speed[d : d + 1],
        valid=data.valid[d : d + 1],
    )


def stop_below(target: float) -> Callable[[Any], bool]:
    """A callback that stops scipy's optimizer once its best objective is at most ``target``
    (scipy passes the intermediate result to a callback with exactly this parameter name)."""

    def reached(intermediate_result: Any) -> bool:
        return bool(intermediate_result.fun <= target)

    return reached


def fit_de(
    data: Followers, model: str, targets: Tensor, generations: int, seed: int
) -> dict[str, Any]:
    """scipy's differential evolution, one driver after another, each generation batched."""
    from scipy.optimize import differential_evolution

    replays, start, best_x = 0, time.perf_counter(), []
    for d in range(len(data.vehicle_ids)):
        driver = one_driver(data, d)

        def objective(points: np.ndarray, driver: Followers = driver) -> np.ndarray:
            nonlocal replays
            replays += points.shape[1]
            params = {n: v[:, None] for n, v in from_unit(model, points.T).items()}
            return gap_mse(driver, model, params)[:, 0].numpy()

        result = differential_evolution(
            objective,
            [(0.0, 1.0)] * 5,
            popsize=10,
            maxiter=generations,
            tol=0.0,
            polish=False,
            vectorized=True,
            updating="deferred",
            seed=seed + d,
            callback=stop_below(float(targets[d])),
        )
        best_x.append(result.x)
    return {"seconds": time.perf_counter() - start, "replays": replays, "unit": np.stack(best_x)}


def identified(data: Followers, model: str, truth: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{name: [D] bool}``: whether a 2 % change of the parameter moves the replayed gap by
    more than :data:`EXCITED` RMS."""
    reference, _ = replay(data, model_class(model)(**truth))
    result = {}
    for name in NAMES:
        moved, _ = replay(data, model_class(model)(**{**truth, name: truth[name] * 1.02}))
        change = (((moved - reference) ** 2 * data.valid).sum(-1) / data.valid.sum(-1)).sqrt()
        result[name] = change > EXCITED
    return result


def one_setting(
    model: str, noisy: bool, seed: int, methods: list[str], budget: int, generations: int
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as folder:
        path, truth = record(Path(folder), model, seed, noisy)
        data = read_trajectories(path)
    true_mse = gap_mse(data, model, truth)
    excited = identified(data, model, truth)
    start = time.perf_counter()
    ours = calibrate(data, model=model, seed=seed, progress=False)
    ours_seconds = time.perf_counter() - start
    ours_mse = gap_mse(data, model, ours.params)
    targets = (ours_mse * MATCH).clamp_min(FLOOR)
    fits: dict[str, tuple[float, int, dict[str, Tensor]]] = {
        "ours": (ours_seconds, ours.replays, ours.params)
    }
    ours_to_target = next(t for t, errors in ours.trace if (errors <= targets * TIE).all())
    runners: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
        "cma": ("CMA-ES", lambda: fit_cma(data, model, targets, budget, seed)),
        "de": ("DE", lambda: fit_de(data, model, targets, generations, seed)),
    }
    for method in methods:
        name, run = runners[method]
        found = run()
        fits[name] = (found["seconds"], found["replays"], from_unit(model, found["unit"]))
    rows = []
    for method, (seconds, replays, params) in fits.items():
        mse, speed_mse = replay_mse(data, model, params)
        relative = {n: ((params[n] - truth[n]).abs() / truth[n])[excited[n]] for n in NAMES}
        rows.append(
            {
                "model": model,
                "data": "noisy" if noisy else "clean",
                "seed": seed,
                "method": method,
                "seconds": seconds,
                "replays": replays,
                "reached": int((mse <= targets * TIE).sum()),
                "to_target": ours_to_target if method == "ours" else seconds,
                "drivers": len(data.vehicle_ids),
                "relative": relative,
                "gap_rmse": mse.sqrt(),
                "speed_rmse": speed_mse.sqrt(),
                "true_gap_rmse": true_mse.sqrt(),
            }
        )
        print(summary_row(rows[-1]), flush=True)
    return rows


def percent(values: Tensor) -> str:
    if values.numel() == 0:
        return "–"
    return f"{100 * float(values.median()):.2f} / {100 * float(values.max()):.1f}"


def summary_row(row: dict[str, Any]) -> list[str]:
    every = torch.cat(list(row["relative"].values()))
    ratio = row["gap_rmse"] / row["true_gap_rmse"].clamp_min(1e-12)
    return [
        row["model"],
        row["data"],
        str(row["seed"]),
        row["method"],
        f"{row['seconds']:.1f}",
        f"{'' if at_target(row) else '> '}{row['to_target']:.1f}",
        str(row["replays"]),
        "–" if row["method"] == "ours" else f"{row['reached']}/{row['drivers']}",
        percent(every),
        f"{float(row['gap_rmse'].median()):.3f} / {float(row['gap_rmse'].max()):.3f}",
        f"{float(row['true_gap_rmse'].median()):.3f}",
        "–" if row["data"] == "clean" else f"{float(ratio.max()):.2f}",
        f"{float(row['speed_rmse'].median()):.3f} / {float(row['speed_rmse'].max()):.3f}",
    ]


def per_parameter(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Median / worst relative error of each parameter over seeds and drivers where identified,
    with how many driver-trajectories identified it."""
    table = []
    keys = sorted({(r["model"], r["data"], r["method"]) for r in rows}, key=str)
    for model, data, method in keys:
        chosen = [r for r in rows if (r["model"], r["data"], r["method"]) == (model, data, method)]
        cells = []
        for name in NAMES:
            values = torch.cat([r["relative"][name] for r in chosen])
            total = sum(r["drivers"] for r in chosen)
            cells.append(f"{percent(values)} ({values.numel()}/{total})")
        table.append([model, data, method, *cells])
    return table


def at_target(row: dict[str, Any]) -> bool:
    """Whether every driver of the fit reached the target (ours by definition)."""
    return bool(row["method"] == "ours" or row["reached"] == row["drivers"])


def speedups(rows: list[dict[str, Any]]) -> list[str]:
    """Per model, data and gradient-free method: its time to the target over ours, and its
    whole time over ours to convergence; medians over seeds, each seed in brackets (a ratio of
    a fit that missed the target within its budget is a lower bound, marked >)."""

    def cell(ratios: list[tuple[float, bool]]) -> str:
        median = statistics.median(x for x, _ in ratios)
        seeds = " / ".join(f"{'' if reached else '>'}{x:.1f}" for x, reached in ratios)
        return f"{median:.1f}× ({seeds})"

    lines = []
    for model in sorted({r["model"] for r in rows}):
        for data in ("clean", "noisy"):
            setting = [r for r in rows if (r["model"], r["data"]) == (model, data)]
            ours = {r["seed"]: r for r in setting if r["method"] == "ours"}
            for method in ("CMA-ES", "DE"):
                chosen = [r for r in setting if r["method"] == method]
                if chosen:
                    same = [(r["to_target"] / ours[r["seed"]]["to_target"], at_target(r))
                            for r in chosen]  # fmt: skip
                    whole = [(r["seconds"] / ours[r["seed"]]["seconds"], at_target(r))
                             for r in chosen]  # fmt: skip
                    lines.append(f"| {model} | {data} | {method} | {cell(same)} | {cell(whole)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["idm", "krauss"], choices=["idm", "krauss"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", nargs="+", default=["clean", "noisy"], choices=["clean", "noisy"])
    parser.add_argument("--methods", nargs="+", default=["cma", "de"], choices=["cma", "de"])
    parser.add_argument("--budget", type=int, default=200_000, help="CMA-ES replays, at most")
    parser.add_argument("--generations", type=int, default=300, help="DE generations per driver")
    parser.add_argument("--out", type=Path, default=Path("docs/results/calibration.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for model in args.models:
        for data in args.data:
            for seed in args.seeds:
                noisy = data == "noisy"
                rows += one_setting(model, noisy, seed, args.methods, args.budget, args.generations)
    write_report(args, rows)


def write_report(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    from importlib.metadata import version

    main_table = sweep.markdown_table(
        [
            "model",
            "data",
            "seed",
            "method",
            "wall time (s)",
            "time to target (s)",
            "replays",
            "drivers at target",
            "parameter error median / worst (%)",
            "gap RMSE median / worst (m)",
            "true parameters' gap RMSE (m)",
            "worst driver's gap RMSE / true's",
            "speed RMSE median / worst (m/s)",
        ],
        [summary_row(r) for r in rows],
    )
    parameter_table = sweep.markdown_table(
        ["model", "data", "method", *(f"{n}: median / worst % (identified)" for n in NAMES)],
        per_parameter(rows),
    )
    text = "\n".join(
        [
            *sweep.report_preamble(
                "Calibration on SUMO platoons: ours against CMA-ES and differential evolution",
                "python benchmarks/calibration.py "
                + " ".join(
                    f"--{k} {' '.join(map(str, getattr(args, k)))}"
                    for k in ("models", "data", "seeds", "methods")
                ),
                f"{DRIVERS} drivers per platoon recorded by SUMO {version('eclipse-sumo')}, "
                "600 steps of 0.1 s, one torch thread, float64",
            ),
            main_table,
            "Wall time of each gradient-free method over ours, median over seeds (per seed in "
            "brackets; above 1: ours is faster). *To the same objective*: each method's time "
            "until every driver's gap MSE is at the target (the gradient-free methods stop "
            "there; ours keeps polishing until it converges, and its trace says when it first "
            "got there); *whole fits*: each method's whole wall time. A gradient-free fit that "
            "missed the target within its budget gives a lower bound (>):",
            "",
            "| model | data | method | to the same objective: time / ours | whole fits: "
            "time / ours |",
            "|---|---|---|---|---|",
            *speedups(rows),
            "",
            "Relative error per parameter, over seeds and drivers, where the trajectory "
            f"identifies it (a 2 % change moves the replayed gap by more than {EXCITED * 100:.0f} "
            "cm RMS; in brackets: driver-trajectories that identify it / all):",
            "",
            parameter_table,
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
