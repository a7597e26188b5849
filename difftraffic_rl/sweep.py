"""Run tasks x algorithms x seeds in parallel processes and summarize them as a markdown table.

Each run is an ordinary run directory (so ``difftraffic-rl plot`` and ``eval`` work on it); the
summary reports, per task and algorithm, the mean +- std over seeds of each run's final and best
smoothed reward and its wall time per epoch.

With ``resume=True`` a sweep is incremental: every run lives in ``<logdir>/<task>_<algo>_s<seed>``,
a run whose checkpoint is at its last epoch is skipped, an interrupted one continues from its
checkpoint (exactly, see :func:`difftraffic_rl.training.resume`), and one killed before its first
checkpoint starts over.
"""

from __future__ import annotations

import csv
import itertools
import math
import multiprocessing
import shutil
import statistics
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["RunSummary", "run_name", "run_summaries", "run_sweep", "summarize"]


def run_name(task: str, algo: str, seed: int) -> str:
    """Directory name of a run in a resumable sweep."""
    return f"{task}_{algo}_s{seed}"


def _checkpoint_epochs(run_dir: Path) -> tuple[int, int] | None:
    """``(epoch reached, epochs configured)`` of a run's checkpoint, ``None`` without one."""
    import torch

    from difftraffic_rl.training import CHECKPOINT

    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    return int(state["epoch"]), int(state["config"]["train"]["epochs"])


def _one_run(task: str, algo: str, seed: int, epochs: int | None, logdir: str,
             overrides: list[str], resume: bool) -> str:
    from difftraffic_rl.training import resume as resume_run
    from difftraffic_rl.training import train

    name = None
    if resume:
        name = run_name(task, algo, seed)
        run_dir = Path(logdir) / name
        reached = _checkpoint_epochs(run_dir)
        if reached is not None:
            epoch, total = reached
            if epochs is not None and total != epochs:
                raise ValueError(f"{run_dir} was started with {total} epochs, not {epochs}; "
                                 "use another logdir")
            if epoch < total:
                resume_run(run_dir, progress=False)
            return str(run_dir)
        if run_dir.exists():
            shutil.rmtree(run_dir)
    result = train(task, algo, seed=seed, epochs=epochs, logdir=logdir, overrides=overrides,
                   progress=False, run_name=name)
    return str(result.run_dir)


def run_sweep(
    tasks: list[str],
    algos: list[str],
    seeds: list[int],
    epochs: int | None = None,
    logdir: str | Path = "runs/sweep",
    workers: int = 1,
    overrides: list[str] | None = None,
    resume: bool = False,
) -> list[Path]:
    """Train every combination with ``workers`` processes (one torch thread each).

    Runs are queued seed by seed (all tasks and algorithms of the first seed first), so a sweep
    stopped early leaves whole seeds. ``resume`` makes the sweep incremental (module docstring).
    """
    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    jobs = [(t, a, s) for s, t, a in itertools.product(seeds, tasks, algos)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(_one_run, t, a, s, epochs, str(logdir), list(overrides or []),
                               resume)
                   for t, a, s in jobs]
        return [Path(f.result()) for f in futures]


@dataclass
class RunSummary:
    """One run's figures.

    Attributes:
        task, algo, seed: what ran.
        epochs: epochs logged; ``final``, ``best``: last and best smoothed reward;
        seconds_per_epoch: training wall time per epoch (logging and checkpoints excluded).
        cpu_seconds_per_epoch: CPU time of the training process per epoch (NaN when not
            logged); unlike wall time it hardly grows when other jobs share the cores.
    """

    task: str
    algo: str
    seed: int
    epochs: int
    final: float
    best: float
    seconds_per_epoch: float
    cpu_seconds_per_epoch: float = math.nan


def run_summaries(run_dirs: list[str | Path]) -> list[RunSummary]:
    """Read each run's ``config.yaml`` and ``progress.csv``; runs without rows are left out."""
    summaries = []
    for run_dir in map(Path, run_dirs):
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        path = run_dir / "progress.csv"
        if not path.exists():
            continue
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows:
            continue
        rewards = [float(r["reward_smoothed"]) for r in rows]
        finite = [r for r in rewards if not math.isnan(r)]
        summaries.append(RunSummary(
            task=config["task"], algo=config["algo"],
            seed=int(config.get("train", {}).get("seed", 0)), epochs=len(rows),
            final=rewards[-1], best=max(finite) if finite else math.nan,
            seconds_per_epoch=float(rows[-1]["wall_time"]) / len(rows),
            cpu_seconds_per_epoch=float(rows[-1].get("cpu_time", math.nan)) / len(rows),
        ))
    return summaries


def format_mean_std(values: list[float], mean_format: str = ".3g", std_format: str = ".2g") -> str:
    """``"mean ± std"`` of the values that are not NaN (``"n/a"`` when none is)."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "n/a"
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return f"{statistics.fmean(finite):{mean_format}} ± {std:{std_format}}"


def summarize(run_dirs: list[str | Path]) -> str:
    """Markdown table: task, algorithm, seeds, final and best smoothed reward, s/epoch."""
    groups: dict[tuple[str, str], list[RunSummary]] = defaultdict(list)
    for run in run_summaries(run_dirs):
        groups[(run.task, run.algo)].append(run)
    lines = ["| task | algorithm | seeds | final reward | best reward | s / epoch |",
             "|---|---|---|---|---|---|"]
    for (task, algo), runs in sorted(groups.items()):
        lines.append(f"| {task} | {algo} | {len(runs)} | "
                     f"{format_mean_std([r.final for r in runs])} | "
                     f"{format_mean_std([r.best for r in runs])} | "
                     f"{statistics.fmean(r.seconds_per_epoch for r in runs):.3f} |")
    return "\n".join(lines) + "\n"
