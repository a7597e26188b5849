"""GI-PPO and the four baselines on the five pace-car variants (paper section 5.3).

Trains LR, RP, LR+RP, PPO and GI-PPO with the shipped (paper) traffic configurations at the
paper's budget (500 epochs x 32 steps x 64 worlds, about 1 M environment steps) for several seeds,
seeds in parallel (one torch thread per process). Every finished run is then evaluated over full
1000-step episodes with its mean action and with actions sampled from it, as in training (the
evaluation is cached in ``<run>/evaluation.json``), and a markdown table and learning curves are
written next to the authors' logged returns.

The sweep is incremental: finished runs are skipped and interrupted ones continue from their last
checkpoint, so re-running the same command resumes a killed benchmark; ``--report-only`` writes
the table from whatever runs exist, marked partial when some are missing.

Usage::

    python benchmarks/traffic.py                                  # 75 runs: hours on 2 cores
    python benchmarks/traffic.py --variants 1lane 2lane --seeds 1 2 3
    python benchmarks/traffic.py --quick                          # smoke run, about a minute
    python benchmarks/traffic.py --report-only
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from difftraffic_rl import sweep
from difftraffic_rl.algorithms import get_algorithm, sweep_algorithms

VARIANTS = ("1lane", "2lane", "3lane", "4lane", "10lane")
ALGOS = tuple(sweep_algorithms())
PAPER_EPOCHS = 500
EVALUATION_EPISODES = 32

AUTHORS_RETURN: dict[str, dict[str, float]] = {
    "1lane": {"gippo": 943.5, "ppo": 946.3, "lr": 945.3, "rp": 947.4, "lrp": 947.2},
    "2lane": {"gippo": 873.7, "ppo": 489.5, "lr": 434.7, "rp": 545.2, "lrp": 679.5},
    "3lane": {"gippo": 157.5, "ppo": 181.3, "lr": 116.4, "rp": 103.0, "lrp": 152.9},
    "4lane": {"gippo": 137.1, "ppo": 131.8, "lr": 125.9, "rp": 131.2, "lrp": 127.8},
    "10lane": {"gippo": 44.4, "ppo": 32.5, "lr": 22.3, "rp": 22.8, "lrp": 28.0},
}
"""The authors' logged returns on their own simulator (issue 5); ours need not match them, but
GI-PPO should be at or above every baseline from 2 lanes on."""

LANE_MEMBERSHIP_NOTES = {
    "body": "a car leads in every lane its body overlaps, so a pace car on a lane line blocks "
    "both lanes",
    "center": "a car leads only in the lane of its nearest lane centre, as in the authors' "
    "simulator",
    "center (soft)": "the humans follow the smooth version of the nearest-centre rule (soft lane "
    "weights and leaders, `PaceCarConfig.soft_lanes`), so the pace car's steering has a true "
    "gradient; collisions keep the discrete rule",
}


def results_table(
    runs: list[sweep.RunSummary], returns: dict[tuple[str, str, int], float], episodes: int
) -> str:
    """Markdown table, one row per (variant, algorithm)."""
    rows = []
    for task, algo, group in sweep.grouped_runs(runs, [f"pacecar-{v}" for v in VARIANTS], ALGOS):
        variant = task.removeprefix("pacecar-")
        finished = [r for r in group if (r.task, r.algo, r.seed) in returns]
        evaluated = [returns[(r.task, r.algo, r.seed)] for r in finished]
        sampled = [sweep.cached_evaluation(r.run_dir, episodes, "sampled") for r in finished]
        rows.append(
            [
                variant,
                get_algorithm(algo).label,
                ",".join(str(r.seed) for r in group),
                "/".join(str(e) for e in sorted({r.epochs for r in group})),
                f"**{sweep.format_mean_std(evaluated, '.1f', '.1f')}**",
                sweep.format_iqm(evaluated, ".0f"),
                " / ".join(f"{value:.0f}" for value in evaluated),
                sweep.format_iqm(sampled, ".0f"),
                " / ".join(f"{value:.0f}" for value in sampled),
                sweep.format_mean_std([r.best for r in group], ".1f", ".1f"),
                sweep.format_mean_std([r.final for r in group], ".1f", ".1f"),
                f"{AUTHORS_RETURN[variant][algo]:.1f}",
                f"{statistics.fmean(r.seconds_per_epoch for r in group):.2f}",
            ]
        )
    return sweep.markdown_table(
        [
            "variant",
            "algorithm",
            "seeds",
            "epochs",
            "evaluation return",
            "evaluation IQM [95 % CI]",
            "per seed",
            "sampled actions: IQM [95 % CI]",
            "per seed, sampled",
            "best training return",
            "final training return",
            "authors' return",
            "s / epoch",
        ],
        rows,
    )


def report(
    run_dirs: list[Path],
    variants: list[str],
    epochs: int,
    seeds: list[int],
    episodes: int,
    out: Path,
    command: str,
    lane_membership: str,
) -> bool:
    """Evaluate finished runs, write the table and one learning-curve plot; return whether every
    requested run finished."""
    runs, returns = sweep.evaluated_summaries(
        run_dirs, {f"pacecar-{v}": epochs for v in VARIANTS}, episodes
    )
    complete = len(returns) == len(run_dirs) and set(variants) == set(VARIANTS)
    lines = sweep.report_preamble(
        "Pace car: GI-PPO and the baselines",
        command,
        f"one torch thread per run, {epochs} epochs × 32 steps × 64 worlds, "
        f"seeds {' '.join(map(str, seeds))}, lane membership `{lane_membership}`: "
        f"{LANE_MEMBERSHIP_NOTES[lane_membership]}",
        runs,
    )
    if not complete:
        lines += [
            f"**Partial:** variants {', '.join(variants)} of {', '.join(VARIANTS)}; "
            f"{len(returns)} of {len(run_dirs)} requested runs finished (only finished runs "
            "are evaluated). `make bench-traffic` runs and resumes the full benchmark.",
            "",
        ]
    lines += [
        f"*Evaluation return*: the trained policy's mean action over {episodes} episodes of 1000 "
        "steps (maximum 1000), mean ± std over seeds, and its interquartile mean over seeds "
        "with a 95 % stratified bootstrap interval (rliable). *Sampled actions*: the same "
        "episodes driven with actions sampled from the policy, as in training (a pace car that "
        "weaves between lanes may need its noise: its mean action can drive straight and lose "
        "the other lanes' humans). *Best training return* (the "
        "authors' measure): each "
        "run's best smoothed return of the sampled actions (running mean over 100 episodes), "
        "mean ± std over seeds; *final*: its value at the end of training. The authors' column "
        "is their logged return on their own simulator, for orientation only.",
        "",
        results_table(runs, returns, episodes),
        f"![learning curves]({out.with_suffix('.png').name})",
        "",
        *sweep.comparison_section(
            {
                (t, a): [
                    returns[(r.task, r.algo, r.seed)]
                    for r in group
                    if (r.task, r.algo, r.seed) in returns
                ]
                for t, a, group in sweep.grouped_runs(
                    runs, [f"pacecar-{v}" for v in VARIANTS], ALGOS
                )
            },
            "evaluation return",
            out,
        ),
    ]
    sweep.write_report(out, "\n".join(lines), runs)
    return complete


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces the runs of this report (defaults left out)."""
    if args.quick:
        return " ".join(["python benchmarks/traffic.py --quick", *sweep.override_arguments(args)])
    parts = ["python benchmarks/traffic.py"]
    if set(args.variants) != set(VARIANTS):
        parts += ["--variants", *args.variants]
    if set(args.algos) != set(ALGOS):
        parts += ["--algos", *args.algos]
    parts += ["--seeds", *map(str, args.seeds)]
    if args.epochs != PAPER_EPOCHS:
        parts += ["--epochs", str(args.epochs)]
    if args.lane_membership != "body":
        parts += ["--lane-membership", args.lane_membership]
    if args.soft_lanes:
        parts.append("--soft-lanes")
    return " ".join(parts + sweep.override_arguments(args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    sweep.add_benchmark_arguments(
        parser,
        ALGOS,
        logdir="docs/results/runs/traffic",
        out="docs/results/traffic.md",
        episodes=EVALUATION_EPISODES,
        episodes_help="1000-step evaluation episodes per run",
        quick_help="smoke run: 3 epochs, seed 1, 4 evaluation episodes, results under the "
        "logdir only",
    )
    parser.add_argument("--epochs", type=int, default=PAPER_EPOCHS)
    parser.add_argument(
        "--lane-membership",
        choices=("body", "center"),
        default="body",
        help="the pace-car road's lane rule (default body); 'center' runs in "
        "<logdir>_center and writes <out>_center.md",
    )
    parser.add_argument(
        "--soft-lanes",
        action="store_true",
        help="with --lane-membership center: the humans follow the smooth version of the rule "
        "(PaceCarConfig.soft_lanes); runs in <logdir>_center_soft, writes <out>_center_soft.md",
    )
    args = parser.parse_args()
    if args.soft_lanes and args.lane_membership != "center":
        parser.error("--soft-lanes needs --lane-membership center")
    if args.lane_membership != "body":
        suffix = f"_{args.lane_membership}" + ("_soft" if args.soft_lanes else "")
        args.logdir = args.logdir.with_name(args.logdir.name + suffix)
        args.out = args.out.with_name(args.out.stem + suffix + args.out.suffix)
    if args.quick:
        args.epochs, args.seeds, args.episodes = 3, [1], 4
        sweep.use_quick_paths(args)
    command = command_line(args)
    tasks = [f"pacecar-{v}" for v in args.variants]
    sweep.sweep_and_report(
        args,
        tasks,
        dict.fromkeys(tasks, args.epochs),
        overrides=[
            f"task_kwargs.lane_membership={args.lane_membership}",
            f"task_kwargs.soft_lanes={str(args.soft_lanes).lower()}",
        ],
        report=lambda run_dirs: report(
            run_dirs,
            args.variants,
            args.epochs,
            args.seeds,
            args.episodes,
            args.out,
            command,
            args.lane_membership + (" (soft)" if args.soft_lanes else ""),
        ),
        evaluate_episodes=args.episodes,
    )


if __name__ == "__main__":
    main()
