"""GI-PPO, PE and the four baselines on the differentiable-physics tasks (paper section 5.2).

Trains LR, RP, LR+RP, PPO, GI-PPO and PE on Cartpole (torch), Ant and Hopper (Newton) with the
shipped (paper) configurations for several seeds, seeds in parallel (one torch thread per
process). The paper's budgets are 500 epochs x 32 steps x 64 worlds (Cartpole), 2000 x 32 x 64
(Ant) and 2000 x 32 x 256 (Hopper); ``--epochs TASK=N`` runs a stated fraction of them. Every
finished run is evaluated over full episodes with its mean action (cached in
``<run>/evaluation.json``), and a markdown table and learning curves are written next to the
authors' logged returns (mean over 5 seeds of each run's best smoothed training return).

The sweep is incremental: finished runs are skipped and interrupted ones continue from their last
checkpoint, so re-running the same command resumes a killed benchmark; ``--report-only`` writes
the table from whatever runs exist, marked partial when runs are missing or the budget is a
fraction of the paper's. Everything in the report file from a heading ``## Investigation`` on is
kept as it is, so notes written under that heading survive a new report.

Usage::

    python benchmarks/physics.py                                  # full paper budget: days on CPU
    python benchmarks/physics.py --epochs ant=20 hopper=10        # make bench-physics
    python benchmarks/physics.py --device cuda --logdir runs/physics_gpu  # bench-physics-gpu
    python benchmarks/physics.py --quick                          # smoke run, about a minute
    python benchmarks/physics.py --report-only --epochs ant=20 hopper=10
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
from pathlib import Path

from difftraffic_rl import sweep
from difftraffic_rl.algorithms import ALGORITHMS, get_algorithm

TASKS = ("cartpole", "ant", "hopper")
TASK_LABELS = {"cartpole": "Cartpole", "ant": "Ant", "hopper": "Hopper"}
ALGOS = tuple(ALGORITHMS)
PAPER_EPOCHS = {"cartpole": 500, "ant": 2000, "hopper": 2000}
"""The paper's budgets in epochs of 32 steps (64 worlds; Hopper 256, as the configurations)."""
EVALUATION_EPISODES = 16
QUICK_EPOCHS, QUICK_WORLDS, QUICK_EPISODES = 2, 4, 2
MIN_SEEDS = 3
INVESTIGATION = re.compile(r"^## Investigation", re.MULTILINE)

AUTHORS_BEST: dict[str, dict[str, float]] = {
    "cartpole": {"gippo": -509, "ppo": -1094, "lr": -1351, "rp": -496, "pe": -1275},
    "ant": {"gippo": 5933, "ppo": 4797, "lr": 1778, "rp": 7066, "pe": 901},
    "hopper": {"gippo": 4777, "ppo": 4452, "lr": 4084, "rp": 5176, "pe": 432},
}
"""The authors' logged results: mean over 5 seeds of each run's best smoothed training return
(issue 6). They give none for LR+RP."""


def parse_epochs(items: list[str]) -> dict[str, int]:
    """Epochs per task from ``TASK=N`` items; tasks not named keep the paper budget.

    Raises ``ValueError`` naming the item when it is malformed, names an unknown task or asks
    for fewer than 1 or more than the paper's epochs.
    """
    epochs = dict(PAPER_EPOCHS)
    for item in items:
        task, _, count = item.partition("=")
        if task not in TASKS or not count.strip().isdigit():
            raise ValueError(
                f"--epochs {item!r}: expected TASK=N with TASK one of "
                f"{', '.join(TASKS)} and N a whole number"
            )
        if not 1 <= int(count) <= PAPER_EPOCHS[task]:
            raise ValueError(
                f"--epochs {item!r}: the epochs for {task} must be in "
                f"1..{PAPER_EPOCHS[task]} (the paper budget), got {int(count)}"
            )
        epochs[task] = int(count)
    return epochs


def budget_text(epochs: int, task: str) -> str:
    """``"200 of 2000 epochs (10 %)"``: epochs run of the paper budget."""
    paper = PAPER_EPOCHS[task]
    return f"{epochs} of {paper} epochs ({100 * epochs / paper:g} %)"


def _whole(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.0f}"


def results_table(runs: list[sweep.RunSummary], returns: dict[tuple[str, str, int], float]) -> str:
    """Markdown table, one row per (task, algorithm) in the paper's order."""
    rows = []
    for task, algo, group in sweep.grouped_runs(runs, TASKS, ALGOS):
        evaluated = [
            returns[(r.task, r.algo, r.seed)] for r in group if (r.task, r.algo, r.seed) in returns
        ]
        authors = AUTHORS_BEST[task].get(algo)
        rows.append(
            [
                TASK_LABELS[task],
                get_algorithm(algo).label,
                ",".join(str(r.seed) for r in group),
                ", ".join(budget_text(e, task) for e in sorted({r.epochs for r in group})),
                "/".join(sorted({str(r.train["num_envs"]) for r in group})),
                f"**{sweep.format_mean_std([r.best for r in group], '.0f', '.0f')}**",
                sweep.format_iqm([r.best for r in group], ".0f"),
                " / ".join(_whole(r.best) for r in group),
                sweep.format_mean_std([r.final for r in group], ".0f", ".0f"),
                sweep.format_mean_std(evaluated, ".0f", ".0f"),
                "—" if authors is None else f"{authors:.0f}",
                f"{statistics.fmean(r.seconds_per_epoch for r in group):.2f}",
            ]
        )
    return sweep.markdown_table(
        [
            "task",
            "algorithm",
            "seeds",
            "epochs run",
            "worlds",
            "best training return",
            "best IQM [95 % CI]",
            "per seed (best)",
            "final training return",
            "evaluation return",
            "authors' best",
            "s / epoch",
        ],
        rows,
    )


def partial_reasons(
    tasks: list[str],
    algos: list[str],
    seeds: list[int],
    epochs: dict[str, int],
    finished: int,
    requested: int,
) -> list[str]:
    """Why the benchmark falls short of issue 6 (every task and algorithm, at least
    ``MIN_SEEDS`` seeds, the paper budget, every run finished); empty when it does not."""
    reasons = []
    if set(tasks) != set(TASKS):
        reasons.append(
            f"tasks {', '.join(TASK_LABELS[t] for t in tasks)} of {', '.join(TASK_LABELS.values())}"
        )
    if set(algos) != set(ALGOS):
        reasons.append(
            f"algorithms {', '.join(get_algorithm(a).label for a in algos)} of "
            f"{', '.join(get_algorithm(a).label for a in ALGOS)}"
        )
    if len(seeds) < MIN_SEEDS:
        reasons.append(f"seeds {' '.join(map(str, seeds))} (issue 6 asks for at least {MIN_SEEDS})")
    fractions = [
        f"{TASK_LABELS[t]} {budget_text(epochs[t], t)}"
        for t in tasks
        if epochs[t] < PAPER_EPOCHS[t]
    ]
    if fractions:
        reasons.append("a fraction of the paper budget: " + ", ".join(fractions))
    if finished < requested:
        reasons.append(
            f"{finished} of {requested} requested runs finished (only finished runs are evaluated)"
        )
    return reasons


def preserved_sections(out: Path) -> str:
    """The part of an existing report from its ``## Investigation`` heading on ('' if none)."""
    if not out.exists():
        return ""
    match = INVESTIGATION.search(out.read_text())
    return "" if match is None else match.string[match.start() :]


def report(run_dirs: list[Path], args: argparse.Namespace, command: str) -> bool:
    """Evaluate finished runs, write the report (keeping its investigation sections) and the
    learning curves; return whether the benchmark is complete (no partial reasons)."""
    runs, returns = sweep.evaluated_summaries(run_dirs, args.epochs, args.episodes)
    reasons = partial_reasons(
        args.tasks, args.algos, args.seeds, args.epochs, len(returns), len(run_dirs)
    )
    devices = sorted({str(r.train["device"]) for r in runs}) or [args.device]
    lines = sweep.report_preamble(
        "Differentiable physics: GI-PPO and the baselines" + (" (partial)" if reasons else ""),
        command,
        f"one torch thread per run, device {'/'.join(devices)}, horizon 32, "
        f"seeds {' '.join(map(str, args.seeds))}",
        runs,
    )
    if reasons:
        lines += [
            f"**Partial:** {'; '.join(reasons)}. `make bench-physics-gpu` runs the full "
            "paper budget on a GPU.",
            "",
        ]
    lines += [
        "*Best training return* (the authors' measure, bold): each run's best smoothed return "
        "of the sampled actions (running mean over 100 episodes), mean ± std over seeds, with "
        "the per-seed values beside it; *final*: its value at the end of training. *Evaluation "
        f"return*: the final policy's mean action over {args.episodes} episodes of at most 240 "
        "(Cartpole) or 1000 (Ant, Hopper) steps, mean ± std over seeds. *Authors' best*: their "
        "logged mean over 5 seeds of each run's best return at the full paper budget (500 × 32 "
        "× 64 steps for Cartpole, 2000 × 32 × 64 for Ant, 2000 × 32 × 256 for Hopper); they "
        "give none for LR+RP. *s / epoch*: training wall time per epoch (logging, checkpoints "
        "and evaluation excluded); it grows when other jobs share the cores.",
        "",
        results_table(runs, returns),
        f"![learning curves]({args.out.with_suffix('.png').name})",
        "",
        *sweep.comparison_section(
            {
                (t, a): [r.best for r in group]
                for t, a, group in sweep.grouped_runs(runs, TASKS, ALGOS)
            },
            "best smoothed training return (the authors' measure)",
            args.out,
        ),
    ]
    preserved = preserved_sections(args.out)
    sweep.write_report(args.out, "\n".join(lines) + ("\n" + preserved if preserved else ""), runs)
    return not reasons


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces the runs of this report."""
    parts = [
        "python benchmarks/physics.py",
        *(["--quick"] if args.quick else []),
        "--tasks",
        *args.tasks,
    ]
    if set(args.algos) != set(ALGOS):
        parts += ["--algos", *args.algos]
    parts += ["--seeds", *map(str, args.seeds)]
    if not args.quick:
        parts += ["--epochs", *(f"{t}={args.epochs[t]}" for t in args.tasks)]
    return " ".join(parts + ["--device", args.device, *sweep.override_arguments(args)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tasks", nargs="+", choices=TASKS, help="default: all three (with --quick: cartpole ant)"
    )
    sweep.add_benchmark_arguments(
        parser,
        ALGOS,
        logdir="docs/results/runs/physics",
        out="docs/results/physics.md",
        episodes=EVALUATION_EPISODES,
        episodes_help="evaluation episodes (worlds) per run",
        quick_help=f"smoke run: {QUICK_EPOCHS} epochs, {QUICK_WORLDS} worlds, seed 1, "
        f"{QUICK_EPISODES} evaluation episodes, results under the logdir only",
    )
    parser.add_argument(
        "--epochs",
        nargs="+",
        default=[],
        metavar="TASK=N",
        help="epochs per task, at most the paper budget "
        f"({' '.join(f'{t}={n}' for t, n in PAPER_EPOCHS.items())}, the default)",
    )
    parser.add_argument("--device", default="cpu", help="torch device of every run: cpu, cuda")
    args = parser.parse_args()
    try:
        args.epochs = parse_epochs(args.epochs)
    except ValueError as error:
        parser.error(str(error))
    if args.device.startswith("cuda") and not args.report_only:
        import torch

        if not torch.cuda.is_available():
            parser.error(
                f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA "
                "device; use --device cpu or a CUDA build of torch"
            )
    overrides = [f"train.device={args.device}"]
    if args.quick:
        args.tasks = args.tasks or ["cartpole", "ant"]
        args.epochs = dict.fromkeys(TASKS, QUICK_EPOCHS)
        args.seeds, args.episodes = [1], QUICK_EPISODES
        overrides.append(f"train.num_envs={QUICK_WORLDS}")
        sweep.use_quick_paths(args)
    args.tasks = args.tasks or list(TASKS)
    command = command_line(args)
    sweep.sweep_and_report(
        args,
        args.tasks,
        args.epochs,
        overrides,
        report=lambda run_dirs: report(run_dirs, args, command),
        evaluate_episodes=args.episodes,
    )


if __name__ == "__main__":
    main()
