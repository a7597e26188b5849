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
import os
import platform
import statistics
import time
from pathlib import Path

from difftraffic_rl.sweep import (
    RunSummary,
    format_mean_std,
    run_name,
    run_summaries,
    run_sweep,
)

TASKS = ("dejong", "dejong64", "ackley", "ackley64")
ALGOS = ("gippo", "ppo", "lr", "rp", "lrp")
ALGO_LABELS = {"gippo": "GI-PPO", "ppo": "PPO", "lr": "LR", "rp": "RP", "lrp": "LR+RP"}
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

REFERENCE_SECONDS_PER_EPOCH = {"ppo": 0.11, "gippo": 0.2}
"""The reference implementation on this machine class (one torch thread, 64 worlds, unloaded);
``../shared/paper/gippo_reference_notes.md`` section 8."""


BOUNDS_NOTE = (
    "What bounds an epoch: the networks are two layers of 32, so arithmetic is negligible; an "
    "epoch is 100-200 *sequential* small optimizer steps (64 critic steps; 16 per alpha-fit "
    "try; 5 per PPO try, up to 8 tries), each a forward, a backward and an Adam step of a few "
    "dozen tiny kernels, so the time is per-op dispatch and the autograd engine. Parameters "
    "and gradients live in one flat buffer per network (bit-identical results), which makes "
    "Adam, clipping and NaN scrubbing a handful of ops; what remains scales with the number "
    "of sequential steps the algorithms prescribe. GI-PPO costs most (alpha-fit retries plus "
    "PPO tries), LR and RP least (one actor step). Wall time also includes waiting for the "
    "cores when other jobs run: compare the CPU column with the reference when the two "
    "differ."
)


def _mean_std(values: list[float]) -> str:
    return format_mean_std(values, ".2e", ".1e")


def results_table(runs: list[RunSummary]) -> str:
    """Markdown table, one row per (problem, algorithm) in the paper's order."""
    lines = [
        "| problem | algorithm | seeds | epochs | final reward | best reward "
        "| authors' best | s / epoch (wall) | s / epoch (CPU) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task in TASKS:
        for algo in ALGOS:
            group = [r for r in runs if r.task == task and r.algo == algo]
            if not group:
                continue
            epochs = sorted({r.epochs for r in group})
            lines.append(
                f"| {TASK_LABELS[task]} | {ALGO_LABELS[algo]} | "
                f"{','.join(str(r.seed) for r in sorted(group, key=lambda r: r.seed))} | "
                f"{'/'.join(map(str, epochs))} | {_mean_std([r.final for r in group])} | "
                f"**{_mean_std([r.best for r in group])}** | {AUTHORS_BEST[task][algo]:g} | "
                f"{statistics.fmean(r.seconds_per_epoch for r in group):.3f} | "
                f"{statistics.fmean(r.cpu_seconds_per_epoch for r in group):.3f} |"
            )
    return "\n".join(lines) + "\n"


def speed_table(runs: list[RunSummary]) -> str:
    """Time per epoch per algorithm (mean over problems and seeds) against the reference."""
    lines = [
        "| algorithm | s / epoch, wall | s / epoch, CPU | reference (wall, unloaded) "
        "| speed-up (wall / CPU) |",
        "|---|---|---|---|---|",
    ]
    for algo in ALGOS:
        group = [r for r in runs if r.algo == algo]
        if not group:
            continue
        wall = statistics.fmean(r.seconds_per_epoch for r in group)
        cpu = statistics.fmean(r.cpu_seconds_per_epoch for r in group)
        reference = REFERENCE_SECONDS_PER_EPOCH.get(algo)
        ref_text = f"{reference:.2f}" if reference else "not measured"
        speedup = f"{reference / wall:.1f}× / {reference / cpu:.1f}×" if reference else "–"
        lines.append(f"| {ALGO_LABELS[algo]} | {wall:.3f} | {cpu:.3f} | {ref_text} | {speedup} |")
    return "\n".join(lines) + "\n"


def write_report(
    run_dirs: list[Path],
    expected_epochs: int,
    seeds: list[int],
    out: Path,
    plot: Path,
    command: str,
) -> bool:
    """Write the markdown report and the plot; return whether every requested run finished."""
    from difftraffic_rl.plot import plot_runs

    runs = run_summaries([d for d in run_dirs if (d / "progress.csv").exists()])
    complete = len(runs) == len(run_dirs) and all(r.epochs == expected_epochs for r in runs)
    finished = sum(r.epochs == expected_epochs for r in runs)
    header = [
        "# Function optimization: GI-PPO and the baselines",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} "
        f"({platform.machine()}, {os.cpu_count()} cores, one torch thread per run, "
        f"{expected_epochs} epochs × 64 worlds, seeds {' '.join(map(str, seeds))}).",
        "",
    ]
    if not complete:
        header += [
            f"**Partial:** {finished} of {len(run_dirs)} runs finished; the `epochs` column "
            "gives the epochs each group actually ran. Re-run the command to continue.",
            "",
        ]
    body = [
        '"Reward" is the smoothed reward of sampled actions (running mean over about 100 '
        "episodes, as the authors log it); *final* is its last value, *best* the best value of "
        "a run, each as mean ± std over seeds. The authors' column is their published mean "
        "over 5 seeds of each run's best reward. s / epoch is training time per epoch (logging "
        "excluded), two runs in parallel on the two cores: wall time, and the process's CPU "
        "time, which hardly grows when other jobs share the machine.",
        "",
        results_table(runs),
        "## Speed",
        "",
        speed_table(runs),
        BOUNDS_NOTE,
        "",
        f"![learning curves]({plot.name})",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header + body))
    if runs:
        plot_runs([d for d in run_dirs if (d / "progress.csv").exists()], plot)
    return complete


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=PAPER_EPOCHS)
    parser.add_argument("--workers", type=int, default=2, help="parallel runs (one per core)")
    parser.add_argument("--logdir", type=Path, default=Path("runs/function_optimization"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/function_optimization.md"))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 20 epochs, seed 1, results under the logdir only",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the table and plot from the runs that exist; train nothing",
    )
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.seeds = 20, [1]
        args.logdir = args.logdir.with_name(args.logdir.name + "_quick")
        args.out = args.logdir / "function_optimization.md"
    run_dirs = [
        args.logdir / run_name(t, a, s) for s in args.seeds for t in args.tasks for a in args.algos
    ]
    if not args.report_only:
        run_sweep(
            args.tasks,
            args.algos,
            args.seeds,
            args.epochs,
            args.logdir,
            args.workers,
            overrides=["train.tensorboard=false"],
            resume=True,
        )
    command = "python benchmarks/function_optimization.py" + (" --quick" if args.quick else "")
    complete = write_report(
        run_dirs, args.epochs, args.seeds, args.out, args.out.with_suffix(".png"), command
    )
    print(args.out.read_text())
    print(f"{'complete' if complete else 'PARTIAL'}: {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
