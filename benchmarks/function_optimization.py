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
import statistics
from pathlib import Path

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
    """Time per epoch per algorithm (mean over problems and seeds) against the reference."""
    rows = []
    for algo in ALGOS:
        group = [r for r in runs if r.algo == algo]
        if not group:
            continue
        wall = statistics.fmean(r.seconds_per_epoch for r in group)
        cpu = statistics.fmean(r.cpu_seconds_per_epoch for r in group)
        reference = REFERENCE_SECONDS_PER_EPOCH.get(algo)
        ref_text = f"{reference:.2f}" if reference else "not measured"
        speedup = f"{reference / wall:.1f}× / {reference / cpu:.1f}×" if reference else "–"
        rows.append([get_algorithm(algo).label, f"{wall:.3f}", f"{cpu:.3f}", ref_text, speedup])
    return sweep.markdown_table(
        [
            "algorithm",
            "s / epoch, wall",
            "s / epoch, CPU",
            "reference (wall, unloaded)",
            "speed-up (wall / CPU)",
        ],
        rows,
    )


def report(
    run_dirs: list[Path], expected_epochs: int, seeds: list[int], out: Path, command: str
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
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.seeds = 20, [1]
        sweep.use_quick_paths(args)
    command = "python benchmarks/function_optimization.py" + (" --quick" if args.quick else "")
    sweep.sweep_and_report(
        args,
        args.tasks,
        dict.fromkeys(args.tasks, args.epochs),
        overrides=[],
        report=lambda run_dirs: report(run_dirs, args.epochs, args.seeds, args.out, command),
    )


if __name__ == "__main__":
    main()
