"""GI-PPO and the four baselines on the paper's function-optimization problems.

Runs LR, RP, LR+RP, PPO and GI-PPO on De Jong and Ackley (1-D and 64-D) with the shipped (paper)
configurations, at the paper's budget (2000 epochs x 64 worlds) for several seeds, seeds in
parallel (one torch thread per process), then writes a markdown table next to the authors'
published numbers and a learning-curve plot (mean +- std over seeds, one panel per problem).

The sweep is incremental: every run lives in ``<logdir>/<task>_<algo>_s<seed>``; finished runs
are skipped and interrupted ones continue from their last checkpoint, so re-running the same
command resumes a killed benchmark. ``--report-only`` writes the table and the plot from whatever
runs exist (marked partial when some are missing or unfinished).

Usage::

    python benchmarks/function_optimization.py                      # 60 runs, ~1 h on 2 cores
    python benchmarks/function_optimization.py --seeds 1 2 3 4 5    # add seeds 4 and 5
    python benchmarks/function_optimization.py --quick              # smoke test, ~1 min
    python benchmarks/function_optimization.py --report-only        # table/plot of what exists
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from difftraffic_rl import sweep
from difftraffic_rl.algorithms import get_algorithm, sweep_algorithms

TASKS = ("dejong", "dejong64", "ackley", "ackley64")
ALGOS = tuple(sweep_algorithms())
TASK_LABELS = {
    "dejong": "De Jong 1-D",
    "dejong64": "De Jong 64-D",
    "ackley": "Ackley 1-D",
    "ackley64": "Ackley 64-D",
}
PAPER_EPOCHS = 2000

AUTHORS_BEST: dict[str, dict[str, float]] = {
    "dejong": {"gippo": -3.8e-10, "ppo": -5.2e-5, "lr": -1.2e-6, "rp": -1.4e-8, "lrp": -6.4e-8},
    "dejong64": {"gippo": -1.0e-6, "ppo": -1.1e-3, "lr": -7.4e-4, "rp": -9.3e-7, "lrp": -3.1e-6},
    "ackley": {"gippo": -5.2e-4, "ppo": -0.249, "lr": -1.277, "rp": -0.482, "lrp": -1.226},
    "ackley64": {"gippo": -3.6e-3, "ppo": -0.138, "lr": -0.638, "rp": -8.9e-3, "lrp": -0.033},
}
"""The authors' logged results: mean over 5 seeds of each run's best smoothed reward."""

REPO = Path(__file__).resolve().parent.parent

AUTHORS_TIMING_FILE = "authors_code_timing.json"
"""In the logdir: the same-run timing of the authors' code against ours (``--authors-code``)."""
TIMED_PROBLEM = "dejong64"
TIMED_ALGOS = ("gippo", "ppo")
TIMED_EPOCHS = (10, 60)
"""A timing runs both lengths; their difference divided by 50 epochs is the time per epoch
without start-up (imports, first calls)."""


BOUNDS_NOTE = (
    "What bounds an epoch: the networks are two layers of 32, so arithmetic is negligible; an "
    "epoch is 100-200 *sequential* small optimizer steps (64 critic steps; 16 per alpha-fit "
    "try; 5 per PPO try, up to 8 tries), each a forward, a backward and an Adam step of a few "
    "dozen tiny kernels, so the time is per-op dispatch and the autograd engine. Parameters "
    "and gradients live in one flat buffer per network (bit-identical results), which makes "
    "Adam, clipping and NaN scrubbing a handful of ops; what remains scales with the number "
    "of sequential steps the algorithms prescribe. GI-PPO costs most (alpha-fit retries plus "
    "PPO tries), LR and RP least (one actor step). Wall time also includes waiting for the "
    "cores when other jobs run: the CPU column hardly grows with the load."
)


def _mean_std(values: list[float]) -> str:
    return sweep.format_mean_std(values, ".2e", ".1e")


EVALUATION_EPISODES = 64
"""Mean-action evaluations per run (one step each)."""


def results_table(runs: list[sweep.RunSummary], returns: dict[tuple[str, str, int], float]) -> str:
    """Markdown table, one row per (problem, algorithm) in the paper's order."""
    rows = [
        [
            TASK_LABELS[task],
            get_algorithm(algo).label,
            ",".join(str(r.seed) for r in group),
            "/".join(map(str, sorted({r.epochs for r in group}))),
            _mean_std([r.final for r in group]),
            f"**{_mean_std([r.best for r in group])}**",
            sweep.format_iqm([r.best for r in group], ".2e"),
            _mean_std(
                [
                    returns[(r.task, r.algo, r.seed)]
                    for r in group
                    if (r.task, r.algo, r.seed) in returns
                ]
            ),
            f"{AUTHORS_BEST[task][algo]:g}",
            f"{statistics.fmean(r.seconds_per_epoch for r in group):.3f}",
            f"{statistics.fmean(r.cpu_seconds_per_epoch for r in group):.3f}",
        ]
        for task, algo, group in sweep.grouped_runs(runs, TASKS, ALGOS)
    ]
    return sweep.markdown_table(
        [
            "problem",
            "algorithm",
            "seeds",
            "epochs",
            "final reward",
            "best reward",
            "best reward IQM [95 % CI]",
            "evaluation reward",
            "authors' best",
            "s / epoch (wall)",
            "s / epoch (CPU)",
        ],
        rows,
    )


def speed_table(runs: list[sweep.RunSummary]) -> str:
    """Time per epoch per algorithm, mean over problems and seeds, as the sweep ran them."""
    rows = []
    for algo in ALGOS:
        group = [r for r in runs if r.algo == algo]
        if group:
            wall = statistics.fmean(r.seconds_per_epoch for r in group)
            cpu = statistics.fmean(r.cpu_seconds_per_epoch for r in group)
            rows.append([get_algorithm(algo).label, f"{wall:.3f}", f"{cpu:.3f}"])
    return sweep.markdown_table(["algorithm", "s / epoch, wall", "s / epoch, CPU"], rows)


def _seconds_per_epoch(
    command: Callable[[int], list[str]], cwd: Path, env: dict[str, str]
) -> float:
    """The run's time per epoch without start-up: two lengths, the difference of their times."""
    seconds = []
    for epochs in TIMED_EPOCHS:
        start = time.perf_counter()
        run = subprocess.run(command(epochs), cwd=cwd, env=env, capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"{' '.join(command(epochs))} failed:\n{run.stderr[-2000:]}")
        seconds.append(time.perf_counter() - start)
    return (seconds[1] - seconds[0]) / (TIMED_EPOCHS[1] - TIMED_EPOCHS[0])


def _authors_command(code: Path, python: str, algo: str, epochs: int, scratch: Path) -> list[str]:
    """Their ``train.py`` on a copy of their configuration with ``epochs`` and the CPU."""
    config = yaml.safe_load(
        (code / "config/func_optim" / TIMED_PROBLEM / f"{algo}.yaml").read_text()
    )
    config["params"]["device"] = "cpu"
    config["params"]["algo"]["max_epochs"] = epochs - 1  # their loop runs max_epochs + 1
    path = scratch / f"{algo}_{epochs}.yaml"
    path.write_text(yaml.safe_dump(config))
    return [
        python,
        "train.py",
        "--cfg",
        str(path),
        "--logdir",
        str(scratch / "logs"),
        "--seed",
        "1",
        "--device",
        "cpu",
    ]


def _our_command(algo: str, epochs: int, scratch: Path) -> list[str]:
    return [
        sys.executable, "-m", "difftraffic_rl", "train", "--task", TIMED_PROBLEM, "--algo", algo,
        "--seed", "1", "--epochs", str(epochs), "--logdir", str(scratch / "ours"), "--no-progress",
    ]  # fmt: skip


def time_against_authors(code: Path, python: str, repeats: int, logdir: Path) -> dict[str, Any]:
    """Time the authors' GI-PPO and PPO and ours on De Jong 64-D, one run at a time, the two
    codes alternated, and save the medians (s / epoch) in ``logdir``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": "src:."}
    ours_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    seconds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        jobs = [algo for _ in range(repeats) for algo in TIMED_ALGOS]
        for algo in tqdm(jobs, desc="timing the authors' code against ours", unit="pair"):
            seconds.setdefault(f"authors/{algo}", []).append(
                _seconds_per_epoch(
                    functools.partial(_authors_command, code, python, algo, scratch=scratch),
                    code,
                    env,
                )
            )
            seconds.setdefault(f"ours/{algo}", []).append(
                _seconds_per_epoch(
                    functools.partial(_our_command, algo, scratch=scratch), REPO, ours_env
                )
            )
    timing = {
        "commit": sweep.source_commit(),
        "date": datetime.date.today().isoformat(),
        "authors_code": str(code),
        "repeats": repeats,
        "seconds_per_epoch": {key: statistics.median(values) for key, values in seconds.items()},
    }
    logdir.mkdir(parents=True, exist_ok=True)
    (logdir / AUTHORS_TIMING_FILE).write_text(json.dumps(timing, indent=1))
    return timing


def authors_speed_section(logdir: Path) -> list[str]:
    """The same-run comparison with the authors' code, or how to measure it."""
    path = logdir / AUTHORS_TIMING_FILE
    if not path.exists():
        return [
            "Against the authors' code: not measured in this run. `--authors-code DIR` (a "
            "checkout of their repository that runs on this machine, with `--authors-python` "
            "its interpreter) times both codes here, one after the other.",
            "",
        ]
    timing = json.loads(path.read_text())
    per_epoch = timing["seconds_per_epoch"]
    rows = [
        [
            get_algorithm(algo).label,
            f"{per_epoch[f'authors/{algo}']:.3f}",
            f"{per_epoch[f'ours/{algo}']:.3f}",
            f"{per_epoch[f'authors/{algo}'] / per_epoch[f'ours/{algo}']:.1f}×",
        ]
        for algo in TIMED_ALGOS
    ]
    short, long = TIMED_EPOCHS
    return [
        f"Against the authors' code ({timing['authors_code']}), measured at commit "
        f"`{timing['commit']}` on {timing['date']}: {TASK_LABELS[TIMED_PROBLEM]}, one torch "
        f"thread, each code alone on the machine, the two alternated; seconds per epoch are the "
        f"time of a {long}-epoch run less that of a {short}-epoch run over {long - short} "
        f"epochs (start-up excluded), median of {timing['repeats']}, both codes as a user runs "
        "them (their train.py; our `difftraffic-rl train`, tensorboard and checkpoints on).",
        "",
        sweep.markdown_table(
            ["algorithm", "authors' code, s / epoch", "ours, s / epoch", "speed-up"], rows
        ),
    ]


def report(
    run_dirs: list[Path],
    expected_epochs: int,
    seeds: list[int],
    out: Path,
    command: str,
    logdir: Path,
) -> bool:
    """Write the markdown report and the plot; return whether every requested run finished."""
    runs, returns = sweep.evaluated_summaries(
        run_dirs, dict.fromkeys(TASKS, expected_epochs), EVALUATION_EPISODES
    )
    finished = sum(r.epochs == expected_epochs for r in runs)
    complete = finished == len(run_dirs)
    lines = sweep.report_preamble(
        "Function optimization: GI-PPO and the baselines",
        command,
        f"one torch thread per run, {expected_epochs} epochs × 64 worlds, "
        f"seeds {' '.join(map(str, seeds))}",
        runs,
    )
    if not complete:
        lines += [
            f"**Partial:** {finished} of {len(run_dirs)} runs finished; the `epochs` column "
            "gives the epochs each group actually ran. Re-run the command to continue.",
            "",
        ]
    lines += [
        '"Reward" is the smoothed reward of sampled actions (running mean over about 100 '
        "episodes, as the authors log it); *final* is its last value, *best* the best value of "
        "a run, each as mean ± std over seeds, and the best reward's interquartile mean over "
        "seeds with a 95 % stratified bootstrap interval (rliable). *Evaluation reward*: the "
        "final policy's mean "
        f"action, averaged over {EVALUATION_EPISODES} evaluations (mean ± std over seeds). "
        "The authors' column is their published mean "
        "over 5 seeds of each run's best reward. s / epoch is training time per epoch (logging "
        "excluded), two runs in parallel on the two cores: wall time, and the process's CPU "
        "time, which hardly grows when other jobs share the machine.",
        "",
        results_table(runs, returns),
        "## Speed",
        "",
        speed_table(runs),
        *authors_speed_section(logdir),
        BOUNDS_NOTE,
        "",
        f"![learning curves]({out.with_suffix('.png').name})",
        "",
        *sweep.comparison_section(
            {
                (t, a): [r.best for r in group]
                for t, a, group in sweep.grouped_runs(runs, TASKS, ALGOS)
            },
            "best smoothed training reward (the authors' measure)",
            out,
        ),
    ]
    sweep.write_report(out, "\n".join(lines), runs)
    return complete


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    sweep.add_benchmark_arguments(
        parser,
        ALGOS,
        logdir="runs/function_optimization",
        out="docs/results/function_optimization.md",
        quick_help="smoke test: 20 epochs, seed 1, results under the logdir only",
    )
    parser.add_argument("--epochs", type=int, default=PAPER_EPOCHS)
    parser.add_argument(
        "--authors-code",
        type=Path,
        help="a checkout of the authors' repository that runs here: time it against ours "
        "in this run before the sweep",
    )
    parser.add_argument(
        "--authors-python",
        default=sys.executable,
        help="the interpreter for --authors-code (default: this one)",
    )
    parser.add_argument("--timing-repeats", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.seeds = 20, [1]
        sweep.use_quick_paths(args)
    command = " ".join(
        ["python benchmarks/function_optimization.py"]
        + (["--quick"] if args.quick else [])
        + sweep.override_arguments(args)
    )
    if args.authors_code:
        time_against_authors(
            args.authors_code, args.authors_python, args.timing_repeats, args.logdir
        )
    sweep.sweep_and_report(
        args,
        args.tasks,
        dict.fromkeys(args.tasks, args.epochs),
        overrides=[],
        report=lambda run_dirs: report(
            run_dirs, args.epochs, args.seeds, args.out, command, args.logdir
        ),
        evaluate_episodes=EVALUATION_EPISODES,
    )


if __name__ == "__main__":
    main()
