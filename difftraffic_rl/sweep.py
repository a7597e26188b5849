"""Run tasks x algorithms x seeds in parallel processes and summarize them as a markdown table.

Each run is an ordinary run directory (so ``difftraffic-rl plot`` and ``eval`` work on it); the
summary reports, per task and algorithm, the mean +- std over seeds of each run's final and best
smoothed reward and its wall time per epoch.

The learning benchmarks (``benchmarks/*.py``) share the rest of this module: their command-line
arguments, the resumable sweep followed by a report, cached evaluations, and the pieces of their
markdown reports.

With ``resume=True`` a sweep is incremental: every run lives in ``<logdir>/<task>_<algo>_s<seed>``,
a run whose checkpoint is at its last epoch is skipped, an interrupted one continues from its
checkpoint (exactly, see :func:`difftraffic_rl.training.resume`), and one killed before its first
checkpoint starts over. A finished run may also be kept as its *record* alone
(:data:`RECORD_FILES`: configuration, progress log, commits and cached evaluation, without the
checkpoint): the sweep skips it and the reports read it, which is how ``docs/results/runs`` keeps
the runs behind the published tables in the repository. A kept run whose settings differ from
those the sweep would start (the shipped configuration or the overrides changed since) stops the
sweep before it trains anything, with the list of such runs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import itertools
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "EVALUATED_ACTIONS",
    "RECORD_FILES",
    "RunSummary",
    "add_benchmark_arguments",
    "cached_evaluation",
    "comparison_section",
    "evaluated_summaries",
    "format_iqm",
    "format_mean_std",
    "grouped_runs",
    "markdown_table",
    "report_preamble",
    "run_name",
    "SweepError",
    "run_summaries",
    "run_sweep",
    "summarize",
    "sweep_and_report",
    "use_quick_paths",
    "write_report",
]


RUN_LOCK_TIMEOUT = 30.0
"""Seconds a sweep waits for another process to finish with a run it is about to resume."""


def run_name(task: str, algo: str, seed: int) -> str:
    """Directory name of a run in a resumable sweep."""
    return f"{task}_{algo}_s{seed}"


def _checkpoint_epochs(run_dir: Path) -> tuple[int, int] | None:
    """``(epoch reached, epochs configured)`` of a run's checkpoint, ``None`` without one."""
    from difftraffic_rl.training import CHECKPOINT, load_checkpoint

    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    state = load_checkpoint(path)
    return int(state["epoch"]), int(state["config"]["train"]["epochs"])


COMMIT_FILE = "source_commit.txt"
"""Per run: the commit (:func:`source_commit`) of every process that trained it, one a line."""

EVALUATION_FILE = "evaluation.json"
"""Per run: the cached evaluation of its final policy (:func:`cached_evaluation`)."""

RECORD_FILES = ("config.yaml", "progress.csv", COMMIT_FILE, EVALUATION_FILE)
"""What a finished run's report needs; a run kept as these files alone counts as finished."""


def _record_epochs(run_dir: Path) -> tuple[int, int] | None:
    """``(epochs, epochs)`` of a finished run kept as its record without a checkpoint: it logged
    every epoch its configuration asks for and its evaluation is cached; ``None`` otherwise."""
    progress = run_dir / "progress.csv"
    if not (progress.exists() and (run_dir / EVALUATION_FILE).exists()):
        return None
    configured = int(yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["epochs"])
    with progress.open(newline="") as handle:
        logged = sum(1 for _ in csv.DictReader(handle))
    return (configured, configured) if logged == configured else None


SWEEP_MAY_DIFFER = ("train.checkpoint_every", "train.tensorboard", "train.num_threads")
"""The settings in which a kept run may differ from the run a sweep would start: they do not
change what it learns."""


def _check_kept_runs(
    jobs: list[tuple[str, str, int]],
    epochs: int | Mapping[str, int] | None,
    logdir: Path,
    overrides: list[str],
) -> None:
    """``ValueError`` listing every kept run (a checkpoint or a finished record in ``logdir``)
    that is not the run this sweep would start: its configuration differs in a setting outside
    :data:`SWEEP_MAY_DIFFER`, because the shipped configuration, a default or the overrides
    changed since it was trained. Reusing it would report another experiment's result."""
    from difftraffic_rl.config import load_run_config
    from difftraffic_rl.training import changed_settings, resolve_config

    stale = []
    for task, algo, seed in jobs:
        run_dir = logdir / run_name(task, algo, seed)
        if (_checkpoint_epochs(run_dir) or _record_epochs(run_dir)) is None:
            continue
        kept = load_run_config(run_dir / "config.yaml")
        wanted = resolve_config(task, algo, seed, _task_epochs(epochs, task), overrides=overrides)
        differences = [
            f"{key} {before!r} (this sweep: {after!r})"
            for key, before, after in changed_settings(kept, wanted)
            if key not in SWEEP_MAY_DIFFER
        ]
        if differences:
            stale.append(f"  {run_dir}: {', '.join(differences)}")
    if stale:
        raise ValueError(
            "kept runs were trained with other settings than this sweep would use; delete them "
            "or give another logdir:\n" + "\n".join(stale)
        )


def _task_epochs(epochs: int | Mapping[str, int] | None, task: str) -> int | None:
    return epochs[task] if isinstance(epochs, Mapping) else epochs


def _record_commit(run_dir: Path, commit: str) -> None:
    path = run_dir / COMMIT_FILE
    recorded = path.read_text().split() if path.exists() else []
    if recorded[-1:] != [commit]:
        with path.open("a") as handle:
            handle.write(commit + "\n")


def _one_run(
    task: str,
    algo: str,
    seed: int,
    epochs: int | None,
    logdir: str,
    overrides: list[str],
    resume: bool,
    evaluate_episodes: int | None = None,
) -> str:
    commit = source_commit()  # the code this process loaded, whatever happens to the checkout
    run_dir, trained = _train_or_resume(task, algo, seed, epochs, logdir, overrides, resume)
    if trained:
        _record_commit(run_dir, commit)
        if evaluate_episodes is not None:
            cached_evaluation(run_dir, evaluate_episodes)  # the record now stands on its own
    return str(run_dir)


def _train_or_resume(
    task: str,
    algo: str,
    seed: int,
    epochs: int | None,
    logdir: str,
    overrides: list[str],
    resume: bool,
) -> tuple[Path, bool]:
    """Train the run, continue it from its checkpoint, or skip it when it is finished; return
    its directory and whether this process trained any of it."""
    from difftraffic_rl.training import resume as resume_run
    from difftraffic_rl.training import train

    run_dir = Path(logdir) / run_name(task, algo, seed) if resume else None
    with _run_lock(run_dir) if run_dir else contextlib.nullcontext():
        if run_dir:
            reached = _checkpoint_epochs(run_dir) or _record_epochs(run_dir)
            if reached is not None:
                epoch, total = reached
                if epoch < total:
                    resume_run(run_dir, progress=False)
                return run_dir, epoch < total
            if run_dir.exists():
                shutil.rmtree(run_dir)
        result = train(
            task,
            algo,
            seed=seed,
            epochs=epochs,
            logdir=logdir,
            overrides=overrides,
            progress=False,
            run_name=run_dir.name if run_dir else None,
        )
    assert result.run_dir is not None  # a logdir was given
    return result.run_dir, True


@contextlib.contextmanager
def _run_lock(run_dir: Path, timeout: float = RUN_LOCK_TIMEOUT) -> Iterator[None]:
    """Hold ``run_dir``'s lock (a file beside it, so that a restart may delete the directory)
    while this process trains the run: a second process that resumes the same run meanwhile
    (a sweep restarted while workers of the killed one still ran, two sweeps sharing a logdir)
    waits for it, and fails with the run's name after ``timeout`` seconds."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f".{run_dir.name}.lock", "w") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{run_dir} is being trained by another process; not resuming it twice"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class SweepError(RuntimeError):
    """Some runs of a sweep failed (the others finished): ``failures`` maps each failed run's
    name to its one-line error, ``run_dirs`` lists the runs that finished."""

    def __init__(self, failures: dict[str, str], run_dirs: list[Path]) -> None:
        self.failures = failures
        self.run_dirs = run_dirs
        lines = [f"{name}: {error}" for name, error in failures.items()]
        super().__init__(
            f"{len(failures)} of {len(failures) + len(run_dirs)} runs failed\n" + "\n".join(lines)
        )


def run_sweep(
    tasks: list[str],
    algos: list[str],
    seeds: list[int],
    epochs: int | Mapping[str, int] | None = None,
    logdir: str | Path = "runs/sweep",
    workers: int = 1,
    overrides: list[str] | None = None,
    resume: bool = False,
    scheduler: str = "ray",
    address: str | None = None,
    gpus_per_run: float = 0.0,
    progress: bool = True,
    evaluate_episodes: int | None = None,
) -> list[Path]:
    """Train every combination, each run as one task of one CPU (one torch thread).

    ``epochs`` is one count for every task, a count per task (every task of ``tasks`` must be a
    key), or ``None`` for each configuration's own. Runs are queued seed by seed (all tasks and
    algorithms of the first seed first), so a sweep stopped early leaves whole seeds.
    ``resume`` makes the sweep incremental (module docstring).

    ``scheduler="ray"`` (default) runs them as Ray tasks: on a Ray instance started here with
    ``workers`` CPUs, or with ``address`` (``"auto"``, ``"ray://host:port"``) on an existing
    cluster, whose nodes must see ``logdir``; ``"local"`` uses a local process pool of
    ``workers``. ``gpus_per_run`` is declared to Ray for runs with ``train.device=cuda``.
    ``progress`` draws the live display (:class:`~difftraffic_rl.scheduling.SweepProgress`).
    ``evaluate_episodes`` evaluates each run the sweep trains as soon as it finishes, caching the
    result in its record (:func:`cached_evaluation`), so the record reports the run even when its
    checkpoint is gone (checkpoints are not kept with the records).

    Returns the run directories in queue order. A failed run does not stop the others; when any
    failed, :class:`SweepError` lists them after every other run has finished.
    """
    from difftraffic_rl.scheduling import RunFailedError, SweepProgress, make_executor

    if isinstance(epochs, Mapping) and not set(tasks) <= set(epochs):
        raise ValueError(
            f"epochs has no count for tasks {sorted(set(tasks) - set(epochs))}; "
            f"it names {sorted(epochs)}"
        )
    cuda = [o for o in overrides or [] if re.fullmatch(r"(train\.)?device=cuda.*", o.strip())]
    if scheduler == "ray" and cuda and gpus_per_run <= 0:
        raise ValueError(
            f"{cuda[0]} needs gpus_per_run > 0 (--gpus-per-run) with the ray scheduler: Ray hides "
            "the GPUs from tasks that declare none"
        )
    logdir = Path(logdir).resolve()  # workers may start in another directory
    jobs = [(t, a, s) for s, t, a in itertools.product(seeds, tasks, algos)]
    if resume:
        _check_kept_runs(jobs, epochs, logdir, list(overrides or []))
    labels = [run_name(t, a, s) for t, a, s in jobs]
    executor = make_executor(scheduler, workers, address, gpus_per_run)
    display = SweepProgress(labels, [logdir / label for label in labels], show=progress)
    results: dict[int, Path] = {}
    failures: dict[str, str] = {}
    try:
        handles = {
            executor.submit(
                _one_run,
                t,
                a,
                s,
                _task_epochs(epochs, t),
                str(logdir),
                list(overrides or []),
                resume,
                evaluate_episodes,
            ): index
            for index, (t, a, s) in enumerate(jobs)
        }
        while handles:
            for handle in executor.wait(list(handles), timeout=PROGRESS_SECONDS):
                index = handles.pop(handle)
                try:
                    results[index] = Path(executor.result(handle))
                    display.finished(index)
                except RunFailedError as error:
                    failures[labels[index]] = str(error)
                    display.finished(index, str(error))
            display.refresh()
    finally:
        display.close()
        executor.close()
    run_dirs = [results[i] for i in sorted(results)]
    if failures:
        raise SweepError(failures, run_dirs)
    return run_dirs


PROGRESS_SECONDS = 2.0
"""How often the sweep's display re-reads the runs in progress."""


@dataclass
class RunSummary:
    """One run's figures.

    Attributes:
        task, algo, seed: what ran.
        epochs: epochs logged; ``final``, ``best``: last and best smoothed reward;
        seconds_per_epoch: training wall time per epoch (logging and checkpoints excluded).
        run_dir: the run directory the figures were read from.
        train: the run's ``train`` settings as its ``config.yaml`` holds them (``num_envs``,
            ``device``, ...).
        cpu_seconds_per_epoch: CPU time of the training process per epoch (NaN when not
            logged); unlike wall time it hardly grows when other jobs share the cores.
        commits: the commits its training processes ran (empty for runs made outside a sweep).
    """

    task: str
    algo: str
    seed: int
    epochs: int
    final: float
    best: float
    seconds_per_epoch: float
    run_dir: Path
    train: dict[str, Any]
    cpu_seconds_per_epoch: float = math.nan
    commits: tuple[str, ...] = ()


def run_summaries(run_dirs: Sequence[str | Path]) -> list[RunSummary]:
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
        train = config.get("train", {})
        summaries.append(
            RunSummary(
                task=config["task"],
                algo=config["algo"],
                seed=int(train.get("seed", 0)),
                epochs=len(rows),
                final=rewards[-1],
                best=max(finite) if finite else math.nan,
                seconds_per_epoch=float(rows[-1]["wall_time"]) / len(rows),
                run_dir=run_dir,
                train=train,
                cpu_seconds_per_epoch=float(rows[-1]["cpu_time"]) / len(rows),
                commits=tuple((run_dir / COMMIT_FILE).read_text().split())
                if (run_dir / COMMIT_FILE).exists()
                else (),
            )
        )
    return summaries


def format_mean_std(values: list[float], mean_format: str = ".3g", std_format: str = ".2g") -> str:
    """``"mean ± std"`` of the values that are not NaN (``"n/a"`` when none is)."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "n/a"
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return f"{statistics.fmean(finite):{mean_format}} ± {std:{std_format}}"


def format_iqm(values: list[float], number_format: str = ".3g", seed: int = 0) -> str:
    """``"IQM [low, high]"``: the interquartile mean of the values that are not NaN with its 95 %
    stratified bootstrap interval (:func:`difftraffic_rl.reporting.iqm_interval`, rliable,
    resampled from a generator seeded with ``seed``); ``"n/a"`` when no value is finite."""
    from difftraffic_rl.reporting import iqm_interval

    iqm, low, high = iqm_interval(values, seed=seed)
    if math.isnan(iqm):
        return "n/a"
    return f"{iqm:{number_format}} [{low:{number_format}}, {high:{number_format}}]"


def source_commit() -> str:
    """Short hash of the checked-out commit, with ``+changes`` when the packages or benchmarks
    differ from it (``"unknown"`` outside a git checkout)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--", "difftraffic", "difftraffic_rl", "benchmarks")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+changes" if changed else "")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table with one column per header cell, ending in a newline."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def grouped_runs(
    runs: list[RunSummary], tasks: Sequence[str], algos: Sequence[str]
) -> Iterator[tuple[str, str, list[RunSummary]]]:
    """``(task, algo, runs sorted by seed)`` for every pair in the order given that has runs."""
    for task, algo in itertools.product(tasks, algos):
        group = sorted((r for r in runs if r.task == task and r.algo == algo), key=lambda r: r.seed)
        if group:
            yield task, algo, group


def summarize(run_dirs: Sequence[str | Path]) -> str:
    """Markdown table: task, algorithm, seeds, final smoothed reward (mean ± std and IQM with its
    95 % stratified bootstrap interval), best smoothed reward, s/epoch."""
    groups: dict[tuple[str, str], list[RunSummary]] = defaultdict(list)
    for run in run_summaries(run_dirs):
        groups[(run.task, run.algo)].append(run)
    return markdown_table(
        [
            "task",
            "algorithm",
            "seeds",
            "final reward",
            "final IQM [95 % CI]",
            "best reward",
            "s / epoch",
        ],
        (
            [
                task,
                algo,
                str(len(runs)),
                format_mean_std([r.final for r in runs]),
                format_iqm([r.final for r in runs]),
                format_mean_std([r.best for r in runs]),
                f"{statistics.fmean(r.seconds_per_epoch for r in runs):.3f}",
            ]
            for (task, algo), runs in sorted(groups.items())
        ),
    )


# ------------------------------------------------------------------ learning benchmarks
EVALUATED_ACTIONS = {"mean": "deterministic_mean", "sampled": "stochastic_mean"}
"""The policy's actions an evaluation drives with, and the entry of ``evaluation.json`` holding
the mean return they scored."""


def cached_evaluation(run_dir: str | Path, episodes: int, actions: str = "mean") -> float:
    """Mean return of a run's latest checkpoint over ``episodes`` episodes, one per world
    (:func:`difftraffic_rl.training.evaluate`), driving with the policy's mean action
    (``actions="mean"``) or with actions sampled from it (``"sampled"``, as in training).

    The evaluation is cached in ``<run_dir>/evaluation.json`` and reused while it holds the same
    number of episodes; a run kept as its record alone (no checkpoint) can give no other count.
    """
    from difftraffic_rl.training import CHECKPOINT, evaluate

    cache = Path(run_dir) / EVALUATION_FILE
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("episodes") == episodes:
            return float(cached[EVALUATED_ACTIONS[actions]])
        if not (Path(run_dir) / CHECKPOINT).exists():
            kept = int(cached["episodes"])
            raise ValueError(
                f"{run_dir} is kept without its checkpoint and was evaluated over {kept} "
                f"episodes, not {episodes}: report it with --episodes {kept} or train it again"
            )
    result = evaluate(run_dir, episodes=episodes)
    cache.write_text(json.dumps(result, indent=2))
    return float(result[EVALUATED_ACTIONS[actions]])


def evaluated_summaries(
    run_dirs: list[Path], epochs: Mapping[str, int], episodes: int
) -> tuple[list[RunSummary], dict[tuple[str, str, int], float]]:
    """Summaries of the runs that logged an epoch, and the cached evaluation return of each
    finished one (it ran ``epochs[task]`` epochs), keyed by ``(task, algo, seed)``."""
    runs = run_summaries([d for d in run_dirs if (d / "progress.csv").exists()])
    returns = {
        (r.task, r.algo, r.seed): cached_evaluation(r.run_dir, episodes)
        for r in runs
        if r.epochs == epochs[r.task]
    }
    return runs, returns


def report_preamble(
    title: str, command: str, setting: str, runs: Sequence[RunSummary] = ()
) -> list[str]:
    """A report's title and the line that says which command made it, when and where, and at
    which commits its ``runs`` were trained."""
    commits = list(dict.fromkeys(c for r in runs for c in r.commits))
    trained = f" Runs trained at commit {', '.join(f'`{c}`' for c in commits)}." if commits else ""
    return [
        f"# {title}",
        "",
        f"Generated by `{command}` at commit `{source_commit()}` on "
        f"{time.strftime('%Y-%m-%d')} ({platform.machine()}, {os.cpu_count()} cores, "
        f"{setting}).{trained}",
        "",
    ]


def comparison_section(
    scores: Mapping[tuple[str, str], list[float]], measure: str, out: Path
) -> list[str]:
    """A benchmark report's section comparing the algorithms with rliable
    (:func:`difftraffic_rl.reporting.comparison_markdown`) on ``scores`` — per ``(task,
    algorithm)`` the runs' ``measure`` — plotting the performance profiles beside ``out``."""
    from difftraffic_rl.reporting import comparison_markdown, profile_path

    finite = {k: [v for v in vs if not math.isnan(v)] for k, vs in scores.items()}
    return [
        "## Across algorithms",
        "",
        f"On the {measure} of each run.",
        "",
        comparison_markdown(
            {k: vs for k, vs in finite.items() if vs},
            profile_image=profile_path(out),
        ),
    ]


def write_report(out: Path, text: str, runs: list[RunSummary]) -> None:
    """Write ``text`` to ``out`` and the runs' learning curves to ``out`` with suffix ``.png``."""
    from difftraffic_rl.plot import plot_runs

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if runs:
        plot_runs([r.run_dir for r in runs], out.with_suffix(".png"))


def add_benchmark_arguments(
    parser: argparse.ArgumentParser,
    algos: Sequence[str],
    logdir: str,
    out: str,
    quick_help: str,
    episodes: int | None = None,
    episodes_help: str = "",
) -> None:
    """The arguments every learning benchmark takes: ``--algos``, ``--seeds``, ``--episodes``
    (only given ``episodes``, the default count of a benchmark that evaluates its runs),
    ``--workers``, ``--logdir``, ``--out``, ``--quick``, ``--set`` (``args.overrides``),
    ``--report-only`` and the sweep's
    scheduler options (``--scheduler``, ``--address``, ``--gpus-per-run``, ``--no-progress``)."""
    from difftraffic_rl.scheduling import add_scheduler_arguments

    parser.add_argument("--algos", nargs="+", default=list(algos), choices=algos)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    if episodes is not None:
        parser.add_argument("--episodes", type=int, default=episodes, help=episodes_help)
    parser.add_argument("--workers", type=int, default=2, help="parallel runs (one per core)")
    parser.add_argument("--logdir", type=Path, default=Path(logdir))
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="override a setting of every run, as `difftraffic-rl train --set` "
        "(e.g. --set hyperparameters.normalize_value=true); the report's command line shows it",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the table and plot from the runs that exist; train nothing",
    )
    add_scheduler_arguments(parser)


def override_arguments(args: argparse.Namespace) -> list[str]:
    """``--set KEY=VALUE`` for each of ``args.overrides``, for a report's command line."""
    return [part for override in args.overrides for part in ("--set", override)]


def use_quick_paths(args: argparse.Namespace) -> None:
    """Point a ``--quick`` run at ``<logdir>_quick`` and its report into that directory, so a
    smoke run never touches the real runs or the published report."""
    args.logdir = args.logdir.with_name(args.logdir.name + "_quick")
    args.out = args.logdir / args.out.name


def sweep_and_report(
    args: argparse.Namespace,
    tasks: list[str],
    epochs: Mapping[str, int],
    overrides: list[str],
    report: Callable[[list[Path]], bool],
    evaluate_episodes: int | None = None,
) -> None:
    """Run (or, with ``--report-only``, skip) the resumable sweep of ``tasks`` x ``args.algos``
    x ``args.seeds``, then ``report(run_dirs)``, which writes ``args.out`` and returns whether
    the benchmark is complete; print the report and where it went. ``evaluate_episodes``: the
    episodes of the report's :func:`cached_evaluation`, run as each run finishes."""
    run_dirs = [
        args.logdir / run_name(t, a, s) for s in args.seeds for t in tasks for a in args.algos
    ]
    if not args.report_only:
        run_sweep(
            tasks,
            args.algos,
            args.seeds,
            epochs,
            args.logdir,
            args.workers,
            overrides=["train.tensorboard=false", *overrides, *args.overrides],
            resume=True,
            scheduler=args.scheduler,
            address=args.address,
            gpus_per_run=args.gpus_per_run,
            progress=not args.no_progress,
            evaluate_episodes=evaluate_episodes,
        )
    complete = report(run_dirs)
    print(args.out.read_text())
    print(f"{'complete' if complete else 'PARTIAL'}: {args.out} and {args.out.with_suffix('.png')}")
