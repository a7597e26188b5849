"""GI-PPO and the four baselines on the five pace-car variants (paper section 5.3).

Trains LR, RP, LR+RP, PPO and GI-PPO with the shipped (paper) traffic configurations at the
paper's budget (500 epochs x 32 steps x 64 worlds, about 1 M environment steps) for several seeds,
seeds in parallel (one torch thread per process). Every finished run is then evaluated over full
1000-step episodes with its mean action (the evaluation is cached in ``<run>/evaluation.json``),
and a markdown table and learning curves are written next to the authors' logged returns.

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
import json
import os
import platform
import statistics
import time
from pathlib import Path

from difftraffic_rl.sweep import RunSummary, format_mean_std, run_name, run_summaries, run_sweep

VARIANTS = ("1lane", "2lane", "3lane", "4lane", "10lane")
ALGOS = ("gippo", "ppo", "lr", "rp", "lrp")
ALGO_LABELS = {"gippo": "GI-PPO", "ppo": "PPO", "lr": "LR", "rp": "RP", "lrp": "LR+RP"}
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


def evaluation_return(run_dir: Path, episodes: int) -> float:
    """Mean deterministic return over ``episodes`` 1000-step episodes (cached per run)."""
    from difftraffic_rl.training import evaluate

    cache = run_dir / "evaluation.json"
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("episodes") == episodes:
            return float(cached["deterministic_mean"])
    result = evaluate(run_dir, episodes=episodes)
    cache.write_text(json.dumps(result, indent=2))
    return float(result["deterministic_mean"])


def results_table(runs: list[RunSummary], returns: dict[tuple[str, str, int], float]) -> str:
    """Markdown table, one row per (variant, algorithm)."""
    lines = [
        "| variant | algorithm | seeds | epochs | evaluation return | per seed "
        "| final training reward | authors' return | s / epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        for algo in ALGOS:
            group = sorted((r for r in runs if r.task == f"pacecar-{variant}" and r.algo == algo),
                           key=lambda r: r.seed)
            if not group:
                continue
            evaluated = [returns[(r.task, r.algo, r.seed)] for r in group
                         if (r.task, r.algo, r.seed) in returns]
            lines.append(
                f"| {variant} | {ALGO_LABELS[algo]} | {','.join(str(r.seed) for r in group)} | "
                f"{'/'.join(str(e) for e in sorted({r.epochs for r in group}))} | "
                f"**{format_mean_std(evaluated, '.1f', '.1f')}** | "
                f"{' / '.join(f'{value:.0f}' for value in evaluated)} | "
                f"{format_mean_std([r.final for r in group], '.1f', '.1f')} | "
                f"{AUTHORS_RETURN[variant][algo]:.1f} | "
                f"{statistics.fmean(r.seconds_per_epoch for r in group):.2f} |"
            )
    return "\n".join(lines) + "\n"


def write_report(run_dirs: list[Path], variants: list[str], epochs: int, seeds: list[int],
                 episodes: int, out: Path, command: str) -> bool:
    """Evaluate finished runs, write the table and one learning-curve plot; return whether every
    requested run finished."""
    from difftraffic_rl.plot import plot_runs

    logged = [d for d in run_dirs if (d / "progress.csv").exists()]
    runs = run_summaries(logged)
    finished = {(r.task, r.algo, r.seed) for r in runs if r.epochs == epochs}
    returns = {
        (r.task, r.algo, r.seed): evaluation_return(d, episodes)
        for r, d in zip(runs, logged, strict=True) if (r.task, r.algo, r.seed) in finished
    }
    complete = len(finished) == len(run_dirs) and set(variants) == set(VARIANTS)
    plot = out.with_suffix(".png")
    lines = [
        "# Pace car: GI-PPO and the baselines",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} ({platform.machine()}, "
        f"{os.cpu_count()} cores, one torch thread per run, {epochs} epochs × 32 steps × 64 "
        f"worlds, seeds {' '.join(map(str, seeds))}).",
        "",
    ]
    if not complete:
        lines += [f"**Partial:** variants {', '.join(variants)} of {', '.join(VARIANTS)}; "
                  f"{len(finished)} of {len(run_dirs)} requested runs finished (only finished runs "
                  "are evaluated). `make bench-traffic` runs and resumes the full benchmark.", ""]
    lines += [
        f"*Evaluation return*: the trained policy's mean action over {episodes} episodes of 1000 "
        "steps (maximum 1000), mean ± std over seeds. *Final training reward*: the smoothed "
        "return of the sampled actions at the end of training. The authors' column is their "
        "logged return on their own simulator, for orientation only.",
        "",
        results_table(runs, returns),
        f"![learning curves]({plot.name})",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    if logged:
        plot_runs(logged, plot)
    return complete


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=PAPER_EPOCHS)
    parser.add_argument("--episodes", type=int, default=EVALUATION_EPISODES,
                        help="1000-step evaluation episodes per run")
    parser.add_argument("--workers", type=int, default=2, help="parallel runs (one per core)")
    parser.add_argument("--logdir", type=Path, default=Path("runs/traffic"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/traffic.md"))
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3 epochs, seed 1, 4 evaluation episodes, results under "
                        "the logdir only")
    parser.add_argument("--report-only", action="store_true",
                        help="write the table and plot from the runs that exist; train nothing")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.seeds, args.episodes = 3, [1], 4
        args.logdir = args.logdir.with_name(args.logdir.name + "_quick")
        args.out = args.logdir / "traffic.md"
    tasks = [f"pacecar-{v}" for v in args.variants]
    run_dirs = [args.logdir / run_name(t, a, s) for s in args.seeds for t in tasks
                for a in args.algos]
    if not args.report_only:
        run_sweep(tasks, args.algos, args.seeds, args.epochs, args.logdir, args.workers,
                  overrides=["train.tensorboard=false"], resume=True)
    command = "python benchmarks/traffic.py" + (" --quick" if args.quick else "")
    complete = write_report(run_dirs, args.variants, args.epochs, args.seeds, args.episodes,
                            args.out, command)
    print(args.out.read_text())
    print(f"{'complete' if complete else 'PARTIAL'}: {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
