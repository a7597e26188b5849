"""Learning curves of several runs: mean +- std over seeds per algorithm, one panel per task."""

from __future__ import annotations

import csv
import math
import warnings
from collections import defaultdict
from pathlib import Path

import yaml

__all__ = ["load_curve", "plot_runs"]


def load_curve(
    run_dir: str | Path, column: str = "reward_smoothed"
) -> tuple[list[float], list[float]]:
    """``(env_steps, values)`` of ``column`` from a run's ``progress.csv``."""
    path = Path(run_dir) / "progress.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a run directory?")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and column not in rows[0]:
        raise ValueError(f"column {column!r} not in {path}; columns: {sorted(rows[0])}")
    return [float(r["env_steps"]) for r in rows], [float(r[column]) for r in rows]


def plot_runs(run_dirs: list[str | Path], out: str | Path, column: str = "reward_smoothed") -> Path:
    """Plot ``column`` against environment steps and save the figure to ``out``.

    Runs are grouped by task (one panel each) and algorithm (one line each, mean +- std over
    the runs, truncated to the shortest). When every value of a panel is <= 0 (the function
    problems) the panel shows ``-value`` on a log axis, so progress toward the optimum 0 is
    visible across orders of magnitude.
    """
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'difftraffic[rl]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups: dict[str, dict[str, list[tuple[list[float], list[float]]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for run_dir in run_dirs:
        config = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
        groups[config["task"]][config["algo"]].append(load_curve(run_dir, column))
    tasks = sorted(groups)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        curves = groups[task]
        finite = [v for runs in curves.values() for _, ys in runs for v in ys if math.isfinite(v)]
        negative = bool(finite) and all(v < 0 for v in finite)
        for algo in sorted(curves):
            runs = curves[algo]
            length = min(len(ys) for _, ys in runs)
            steps = np.asarray(runs[0][0][:length])
            values = np.asarray([ys[:length] for _, ys in runs])
            if negative:
                values = -values
            with warnings.catch_warnings():
                # Epochs before any episode has ended have no return: all-NaN columns stay NaN.
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
            ax.plot(steps, mean, label=f"{algo} (n={len(runs)})")
            lower = np.maximum(mean - std, mean * 1e-3) if negative else mean - std
            ax.fill_between(steps, lower, mean + std, alpha=0.2)
        if negative:
            ax.set_yscale("log")
        ax.set_title(task)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(f"-{column} (log)" if negative else column)
        ax.legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
