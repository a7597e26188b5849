"""Calibration by gradient against CMA-ES, on the same drivers, objective and machine.

Simulates the platoon of ``examples/calibrate_idm.py`` (a stop-and-go lead car and ``--drivers``
IDM followers with parameters drawn per driver, 60 s at 0.1 s), clean and with measurement noise
(0.3 m on positions, 0.2 m/s on speeds), and fits it twice:

- **gradient**: :func:`difftraffic.calibration.calibrate` with its default schedule, every driver
  in one batched optimization;
- **CMA-ES** (the ``cma`` package; the gradient-free method practice uses): one CMA-ES per driver
  on the same objective (the whole replay's gap MSE) over the same bounds (scaled to [0, 1]),
  population 9 — and, to be fair to it, every driver's population evaluated in one batched
  replay per generation. It stops when each driver's best is within 1 % of the gradient fit's
  objective (or, where the gradient fit is below the noise floor, of its own value), or at the
  evaluation budget.

Reports per setting: each method's wall time, replays (simulations) used, the median and worst
relative parameter error and the gap RMSE, in ``docs/results/calibration.md``.

Usage::

    python benchmarks/calibration.py                  # 12 drivers, 3 repeats (seeds 0-2)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from difftraffic.calibration import (
    DEFAULT_SCHEDULE,
    IDM_BOUNDS,
    Followers,
    calibrate,
    read_trajectories,
    replay,
)
from difftraffic.idm import IDMParams
from difftraffic_rl import sweep

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from calibrate_idm import NAMES, add_noise, in_file_order, simulate  # noqa: E402

STARTS = 4
"""Random starts of the gradient fit (calibrate's default)."""

MATCH = 1.01
"""CMA-ES counts as done with a driver when its best objective is within this factor of the
gradient fit's."""


def gap_mse(data: Followers, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Whole-replay gap MSE per follower, ``[..., D]`` for parameters ``[..., D]``."""
    with torch.no_grad():
        gap, _ = replay(data, IDMParams(**params))
        return ((gap - data.gap) ** 2 * data.valid).sum(-1) / data.valid.sum(-1)


def fit_cma(data: Followers, targets: torch.Tensor, budget: int, seed: int) -> dict[str, object]:
    """Lockstep CMA-ES, one per driver, each population batched into one replay."""
    import cma

    drivers = len(data.vehicle_ids)
    low = np.array([IDM_BOUNDS[n][0] for n in NAMES])
    span = np.array([IDM_BOUNDS[n][1] - IDM_BOUNDS[n][0] for n in NAMES])
    options = {"bounds": [0.0, 1.0], "popsize": 9, "seed": seed + 1, "verbose": -9}
    strategies = [
        cma.CMAEvolutionStrategy([0.5] * len(NAMES), 0.3, options) for _ in range(drivers)
    ]
    best = np.full(drivers, np.inf)
    best_x = np.zeros((drivers, len(NAMES)))
    replays, start = 0, time.perf_counter()
    while replays < budget and not (best <= targets.numpy() * MATCH).all():
        asked = [s.ask() for s in strategies]
        population = np.stack([np.stack(a) for a in asked], 1)  # [P, D, 5]
        values = low + span * population
        params = {n: torch.tensor(values[..., i]) for i, n in enumerate(NAMES)}
        losses = gap_mse(data, params).numpy()  # [P, D]
        replays += losses.size
        for d, strategy in enumerate(strategies):
            strategy.tell(asked[d], losses[:, d].tolist())
            k = int(losses[:, d].argmin())
            if losses[k, d] < best[d]:
                best[d], best_x[d] = losses[k, d], values[k, d]
    return {
        "seconds": time.perf_counter() - start,
        "replays": replays,
        "params": {n: torch.tensor(best_x[:, i]) for i, n in enumerate(NAMES)},
        "objective": torch.tensor(best),
    }


def errors(fitted: dict[str, torch.Tensor], truth: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Median and worst relative parameter error over drivers and parameters (%)."""
    relative = torch.stack([(fitted[n] - truth[n]).abs() / truth[n] for n in NAMES])
    return 100 * float(relative.median()), 100 * float(relative.max())


def one_setting(drivers: int, noisy: bool, seed: int, budget: int) -> list[list[str]]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trajectories.csv"
        truth = simulate(path, drivers, seed)
        if noisy:
            add_noise(path, 0.3, 0.2, seed)
        data = read_trajectories(path)
    truth = in_file_order(truth, data.vehicle_ids)
    true_rmse = gap_mse(data, truth).sqrt()
    start = time.perf_counter()
    result = calibrate(data, starts=STARTS, seed=seed, progress=False)
    gradient_seconds = time.perf_counter() - start
    objective = gap_mse(data, result.params)
    # every iteration replays each start of each driver over the whole trajectory (the windows
    # tile it), forward and backward; the first stage runs the 4 random starts
    first = min(result.iterations, DEFAULT_SCHEDULE[0].iterations)
    gradient_replays = len(data.vehicle_ids) * (STARTS * first + result.iterations - first)
    cma_result = fit_cma(data, objective, budget, seed)
    rows = []
    for name, seconds, replays, params, rmse in (
        ("gradient", gradient_seconds, gradient_replays, result.params, objective.sqrt()),
        (
            "CMA-ES",
            cma_result["seconds"],
            cma_result["replays"],
            cma_result["params"],
            cma_result["objective"].sqrt(),
        ),  # type: ignore[union-attr]
    ):
        median, worst = errors(params, truth)  # type: ignore[arg-type]
        rows.append(
            [
                "noisy" if noisy else "clean",
                str(seed),
                name,
                f"{seconds:.1f}",
                f"{replays}",
                f"{median:.2f} / {worst:.1f}",
                f"{float(rmse.median()):.3f} / {float(rmse.max()):.3f}",  # type: ignore[union-attr]
                f"{float(true_rmse.median()):.3f}",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drivers", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=200_000, help="CMA-ES replays, at most")
    parser.add_argument("--out", type=Path, default=Path("docs/results/calibration.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for noisy in (False, True):
        for seed in args.seeds:
            rows += one_setting(args.drivers, noisy, seed, args.budget)
            print("\n".join(" | ".join(r) for r in rows[-2:]), flush=True)
    ratio = {
        noisy: statistics.median(
            float(c[3]) / float(g[3])
            for g, c in zip(rows[0::2], rows[1::2], strict=True)
            if g[0] == noisy
        )
        for noisy in ("clean", "noisy")
    }
    table = sweep.markdown_table(
        [
            "data",
            "seed",
            "method",
            "wall time (s)",
            "replays (gradient: forward + backward)",
            "parameter error median / worst (%)",
            "gap RMSE median / worst (m)",
            "true parameters' gap RMSE (m)",
        ],
        rows,
    )
    text = "\n".join(
        [
            *sweep.report_preamble(
                "Calibration: gradient against CMA-ES",
                "python benchmarks/calibration.py",
                f"{args.drivers} IDM drivers behind a stop-and-go lead car, 600 steps of 0.1 s, "
                "one torch thread, float64",
            ),
            table,
            "CMA-ES wall time over the gradient fit's, median over seeds: "
            f"**{ratio['clean']:.1f}×** on clean data, **{ratio['noisy']:.1f}×** on noisy data "
            "(above 1: the gradient fit is faster). CMA-ES stops per driver "
            f"within {100 * (MATCH - 1):.0f} % of the gradient fit's objective or at "
            f"{args.budget} replays.",
            "",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
