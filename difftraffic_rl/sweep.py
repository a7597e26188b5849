"""Run tasks x algorithms x seeds in parallel processes and summarize them as a markdown table.

Each run is an ordinary run directory (so ``difftraffic-rl plot`` and ``eval`` work on it); the
summary reports, per task and algorithm, the mean +- std over seeds of each run's final and best
smoothed reward and its wall time per epoch.
"""

from __future__ import annotations

import csv
import itertools
import math
import multiprocessing
import statistics
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

__all__ = ["run_sweep", "summarize"]


def _one_run(task: str, algo: str, seed: int, epochs: int | None, logdir: str,
             overrides: list[str]) -> str:
    from difftraffic_rl.training import train

    result = train(task, algo, seed=seed, epochs=epochs, logdir=logdir, overrides=overrides,
                   progress=False)
    return str(result.run_dir)


def run_sweep(
    tasks: list[str],
    algos: list[str],
    seeds: list[int],
    epochs: int | None = None,
    logdir: str | Path = "runs/sweep",
    workers: int = 1,
    overrides: list[str] | None = None,
) -> list[Path]:
    """Train every combination with ``workers`` processes (one torch thread each)."""
    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    jobs = list(itertools.product(tasks, algos, seeds))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(_one_run, t, a, s, epochs, str(logdir), list(overrides or []))
                   for t, a, s in jobs]
        return [Path(f.result()) for f in futures]


def _fmt(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3g} ± {std:.2g}"


def summarize(run_dirs: list[str | Path]) -> str:
    """Markdown table: task, algorithm, seeds, final and best smoothed reward, s/epoch."""
    groups: dict[tuple[str, str], list[tuple[float, float, float]]] = defaultdict(list)
    for run_dir in map(Path, run_dirs):
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        with (run_dir / "progress.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        rewards = [float(r["reward_smoothed"]) for r in rows]
        finite = [r for r in rewards if not math.isnan(r)]
        groups[(config["task"], config["algo"])].append(
            (rewards[-1], max(finite), float(rows[-1]["wall_time"]) / len(rows))
        )
    lines = ["| task | algorithm | seeds | final reward | best reward | s / epoch |",
             "|---|---|---|---|---|---|"]
    for (task, algo), runs in sorted(groups.items()):
        finals, bests, times = zip(*runs, strict=True)
        lines.append(f"| {task} | {algo} | {len(runs)} | {_fmt(list(finals))} | "
                     f"{_fmt(list(bests))} | {statistics.fmean(times):.3f} |")
    return "\n".join(lines) + "\n"
