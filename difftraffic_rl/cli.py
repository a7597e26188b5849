"""The ``difftraffic-rl`` command: ``train``, ``eval``, ``plot``, ``sweep``, ``report``,
``export`` and ``list``.

Examples::

    difftraffic-rl train --task dejong64 --algo gippo --seed 1 --epochs 500 --set alpha0=1e-4
    difftraffic-rl train --resume runs/dejong64_gippo_s1_20250101-120000
    difftraffic-rl train --resume runs/dejong64_gippo_s1_20250101-120000 --epochs 3000
    difftraffic-rl eval runs/dejong64_gippo_s1_20250101-120000
    difftraffic-rl plot runs/dejong64_* --out curves.png
    difftraffic-rl sweep --tasks dejong ackley --algos ppo gippo --seeds 1 2 3 --workers 2
    difftraffic-rl sweep --tasks dejong ackley --resume --logdir /shared/runs --address auto
    difftraffic-rl report runs/sweep/* --out report.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from difftraffic_rl.training import TrainResult

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests); algorithm choices come from the
    registry (:data:`difftraffic_rl.algorithms.ALGORITHMS`)."""
    from difftraffic_rl.algorithms import ALGORITHMS, sweep_algorithms
    from difftraffic_rl.reporting import MEASURES
    from difftraffic_rl.scheduling import add_scheduler_arguments

    parser = argparse.ArgumentParser(
        prog="difftraffic-rl", description="Gradient-informed RL (GI-PPO) and its baselines."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train an algorithm on a task (or resume a run)")
    train.add_argument("--task", help="task name (see `difftraffic-rl list`)")
    train.add_argument("--algo", choices=list(ALGORITHMS), help="algorithm")
    train.add_argument(
        "--config",
        metavar="FILE",
        help="a YAML configuration (task, algo, train, hyperparameters, task_kwargs) to start "
        "from instead of the shipped one; --task/--algo default to its own",
    )
    train.add_argument("--seed", type=int, help="run seed (default 1; 0 is valid)")
    train.add_argument(
        "--epochs",
        type=int,
        help="epochs in all (default: the config's); with --resume, more than the "
        "run's extends it, and linear learning-rate schedules then decay over "
        "the new total, so the remaining epochs get other rates",
    )
    train.add_argument("--device", help="torch device, e.g. cpu or cuda")
    train.add_argument("--logdir", help="parent of the run directory (default runs)")
    train.add_argument(
        "--name",
        help="the run directory's name under --logdir (default <task>_<algo>_s<seed>_<time>); "
        "it must not exist yet",
    )
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set actor_lr=3e-4 --set train.epochs=10",
    )
    train.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its checkpoint; --epochs and --set "
        "train.checkpoint_every/tensorboard/num_threads may change it, any "
        "other changed setting (--seed, --device, hyperparameters, "
        "--task/--algo) is an error",
    )
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved configuration (every setting, defaults included) and exit",
    )

    evaluate = sub.add_parser("eval", help="returns of a run's latest checkpoint")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--episodes", type=int, help="episodes per mode (default num_envs)")
    evaluate.add_argument("--seed", type=int, default=0, help="evaluation seed")

    plot = sub.add_parser("plot", help="learning curves, mean +- std over seeds")
    plot.add_argument("run_dirs", nargs="+")
    plot.add_argument("--out", default="curves.png", help="output image")
    plot.add_argument("--column", default="reward_smoothed", help="progress.csv column")

    sweep = sub.add_parser("sweep", help="tasks x algorithms x seeds in parallel, then a table")
    sweep.add_argument("--tasks", nargs="+", default=["dejong", "dejong64", "ackley", "ackley64"])
    sweep.add_argument("--algos", nargs="+", choices=list(ALGORITHMS), default=sweep_algorithms())
    sweep.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    sweep.add_argument("--epochs", type=int, help="epochs per run (default: the config's)")
    sweep.add_argument("--logdir", default="runs/sweep")
    sweep.add_argument("--workers", type=int, default=1, help="parallel processes")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sweep.add_argument("--table", help="also write the markdown table to this file")
    sweep.add_argument(
        "--resume",
        action="store_true",
        help="incremental: runs named <task>_<algo>_s<seed> under --logdir; "
        "finished ones are skipped, interrupted ones continue",
    )
    add_scheduler_arguments(sweep)

    report = sub.add_parser(
        "report", help="IQM with bootstrap intervals, probability of improvement, profiles"
    )
    report.add_argument("run_dirs", nargs="+")
    report.add_argument("--out", default="report.md", help="markdown report (plot beside it)")
    report.add_argument("--measure", choices=MEASURES, default="final")
    report.add_argument(
        "--reference", default="gippo", help="algorithm compared with each other one"
    )

    export = sub.add_parser(
        "export", help="write a run's deterministic policy as a self-contained policy.pt2"
    )
    export.add_argument("run_dir", help="run directory with checkpoints/checkpoint.pt")
    export.add_argument("--out", help="output file (default RUN_DIR/policy.pt2)")
    sub.add_parser("list", help="registered tasks and algorithms")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status.

    A bad value, a missing or unreadable file or directory is one line on stderr naming it, and
    exit status 2 (as argparse's own errors), never a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, OSError, ImportError) as error:
        print(f"difftraffic-rl: error: {error}", file=sys.stderr)
        return 2


def _list(args: argparse.Namespace) -> int:
    from difftraffic_rl.algorithms import ALGORITHMS
    from difftraffic_rl.tasks import available_tasks, task_spec

    print("tasks:")
    for name in available_tasks():
        print(f"  {name:16s} {task_spec(name).description}")
    print("algorithms:")
    for name, cls in ALGORITHMS.items():
        print(f"  {name:16s} {cls.label}: {cls.description}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from difftraffic_rl.plot import plot_runs

    print(plot_runs(args.run_dirs, args.out, args.column))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from difftraffic_rl.sweep import SweepError, run_sweep, summarize

    try:
        run_dirs = run_sweep(
            args.tasks,
            args.algos,
            args.seeds,
            args.epochs,
            args.logdir,
            args.workers,
            args.overrides,
            resume=args.resume,
            scheduler=args.scheduler,
            address=args.address,
            gpus_per_run=args.gpus_per_run,
            progress=not args.no_progress,
        )
        failed = None
    except SweepError as error:
        run_dirs, failed = error.run_dirs, error
    if run_dirs:
        table = summarize(run_dirs)
        print(table)
        if args.table:
            Path(args.table).write_text(table)
    if failed is not None:
        print(f"difftraffic-rl: error: {failed}", file=sys.stderr)
        return 1
    return 0


def _report(args: argparse.Namespace) -> int:
    from difftraffic_rl.reporting import write_report
    from difftraffic_rl.sweep import run_summaries

    for run_dir in args.run_dirs:
        if not (Path(run_dir) / "config.yaml").is_file():
            raise ValueError(f"{run_dir} is not a run directory (it has no config.yaml)")
    out = write_report(
        run_summaries(args.run_dirs), args.out, args.measure, args.reference, "Sweep report"
    )
    print(out.read_text())
    print(f"written: {out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from difftraffic.policy import POLICY_FILE
    from difftraffic_rl.export import export_policy
    from difftraffic_rl.training import CHECKPOINT, load_algorithm

    algorithm = load_algorithm(Path(args.run_dir) / CHECKPOINT)
    print(export_policy(algorithm, args.out or Path(args.run_dir) / POLICY_FILE))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from difftraffic_rl.training import evaluate

    print(json.dumps(evaluate(args.run_dir, args.episodes, args.seed), indent=2))
    return 0


def _train(args: argparse.Namespace) -> int:
    from difftraffic_rl.training import NO_EPISODE_YET, train

    if args.resume:
        result = _resume(args)
    else:
        base = None if args.config is None else _user_config(args.config)
        task = args.task or (base or {}).get("task")
        algo = args.algo or (base or {}).get("algo")
        if not task or not algo:
            raise ValueError("train needs --task and --algo (or a --config naming them)")
        # What defines the run, shared by --print-config and training.
        settings: dict[str, Any] = {
            "seed": 1 if args.seed is None else args.seed,
            "epochs": args.epochs,
            "device": args.device,
            "overrides": args.overrides,
            "base_config": base,
        }
        if args.print_config:
            return _print_config(task, algo, settings)
        result = train(
            task,
            algo,
            logdir=args.logdir or "runs",
            progress=not args.no_progress,
            run_name=args.name,
            **settings,
        )
    print(f"run directory: {result.run_dir}")
    if not result.metrics:
        print("nothing to train: the run has reached its train.epochs (--epochs N trains on to N)")
        return 0
    last = result.metrics[-1]
    reward = last["reward_smoothed"]
    shown = NO_EPISODE_YET if math.isnan(reward) else f"{reward:.6e}"
    print(f"final smoothed reward: {shown} (epoch {int(last['epoch'])})")
    return 0


def _print_config(task: str, algo: str, settings: dict[str, Any]) -> int:
    import yaml

    from difftraffic_rl.training import resolve_config

    config = resolve_config(task, algo, **settings)
    print(yaml.safe_dump(config.resolved(), sort_keys=False), end="")
    return 0


def _user_config(path: str) -> dict[str, Any]:
    """A user's YAML configuration; ``ValueError`` naming the file when it is not a mapping."""
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        raise ValueError(
            f"--config {path}: not valid YAML ({str(error).splitlines()[0]})"
        ) from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a mapping of settings, got {values!r:.60}")
    return values


def _resume(args: argparse.Namespace) -> TrainResult:
    """``train --resume``: options that name the run must agree with it, the others become
    overrides that :func:`~difftraffic_rl.training.resume` accepts or rejects by name."""
    from difftraffic_rl.config import load_run_config
    from difftraffic_rl.training import resume

    config = load_run_config(Path(args.resume) / "config.yaml")
    for option, asked, own in (
        ("--task", args.task, config.task),
        ("--algo", args.algo, config.algo),
    ):
        if asked is not None and asked != own:
            raise ValueError(
                f"{option} {asked} conflicts with {option[2:]} {own} of the resumed "
                f"run {args.resume}"
            )
    if args.logdir is not None:
        raise ValueError(f"--logdir does not apply to --resume: the run stays in {args.resume}")
    settings = [
        f"train.{name}={value}"
        for name, value in (("seed", args.seed), ("device", args.device))
        if value is not None
    ]
    return resume(
        args.resume,
        progress=not args.no_progress,
        epochs=args.epochs,
        overrides=settings + args.overrides,
    )


COMMANDS = {
    "train": _train,
    "eval": _eval,
    "plot": _plot,
    "sweep": _sweep,
    "report": _report,
    "export": _export,
    "list": _list,
}
