"""Mixed autonomy on the Sugiyama ring: can one learned car damp the stop-and-go waves?

Trains GI-PPO, PPO and RP on the ``ring`` task (:class:`difftraffic.scenarios.ring.RingTask`:
one automated car among 21 IDM drivers, episodes of 150 s starting in stop-and-go) with the
shipped configurations (500 epochs x 32 steps x 64 worlds) for several seeds, evaluates every
finished run over full episodes with its mean action, and compares them with two references on
the same start states and reward: the car driven like an average human (the all-human ring,
:data:`WARMUP_DRIVER`) and the uniform flow the waves destroy (every car at the equilibrium
speed, no headway penalty). Writes ``docs/results/ring_control.md`` and learning curves.

The sweep is incremental like the traffic benchmark: re-running resumes, ``--report-only``
reports whatever runs exist.

Usage::

    python benchmarks/ring_control.py                       # 9 runs, about 1.5 h on 2 cores
    python benchmarks/ring_control.py --report-only
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from difftraffic.idm import idm_acceleration
from difftraffic.scenarios.ring import WARMUP_DRIVER, RingTask, uniform_flow_speed
from difftraffic.scenarios.ring_env import RingEnv
from difftraffic_rl import sweep

ALGOS = ("gippo", "ppo", "rp")
EPOCHS = 500
EVALUATION_EPISODES = 32
EVALUATION_SEED = 0
"""Seed of the evaluation environment, as :func:`difftraffic_rl.training.evaluate` uses."""

HUMAN_ACCELERATION_SCALE = 100.0
"""m/s^2 per unit action while the reference car drives like a human: wide enough that the IDM's
braking is never clipped."""


def human_reference(episodes: int) -> tuple[float, float]:
    """Mean return and mean speed (m/s) over ``episodes`` episodes with the automated car driven
    by :data:`WARMUP_DRIVER` (the ring stays all-human), from the evaluation's start states."""
    env = RingEnv(episodes, {"max_acceleration": HUMAN_ACCELERATION_SCALE}, seed=EVALUATION_SEED)
    env.reset()
    total = torch.zeros(episodes, dtype=torch.float64)
    speeds = []
    ended = torch.zeros(episodes, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(env.task.max_episode_steps):
            state, _ = env.require_worlds()
            gap, lead_speed = env.task.leader(state)
            acceleration = idm_acceleration(
                state.v[:, 0], lead_speed, gap.clamp_min(0.1), WARMUP_DRIVER
            )
            speeds.append(state.v.mean(-1))
            _, reward, terminated, truncated, _ = env.step(
                (acceleration / HUMAN_ACCELERATION_SCALE).unsqueeze(1)
            )
            total += torch.where(ended, 0.0, reward.double())
            ended |= terminated | truncated
    return float(total.mean()), float(torch.stack(speeds).mean())


def uniform_reference(episodes: int) -> tuple[float, float]:
    """Return and speed (m/s) of the uniform flow of the evaluation's drivers: every car at the
    equilibrium speed for a whole episode (an upper reference; no headway penalty)."""
    task = RingTask()
    generator = torch.Generator().manual_seed(EVALUATION_SEED)
    _, drivers = task.initial(episodes, generator, None, torch.float64)
    config = task.config
    speed = uniform_flow_speed(drivers, config.length, config.vehicle_length)  # type: ignore[arg-type]
    per_episode = speed / task.speed_scale * task.max_episode_steps
    return float(per_episode.mean()), float(speed.mean())


def results_table(
    runs: list[sweep.RunSummary],
    returns: dict[tuple[str, str, int], float],
    references: dict[str, tuple[float, float]],
) -> str:
    lines = [
        "| controller | seeds | evaluation return | IQM [95 % CI] | per seed | best training "
        "return | s / epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, algo, group in sweep.grouped_runs(runs, ["ring"], list(ALGOS)):
        scores = [returns[k] for r in group if (k := (r.task, r.algo, r.seed)) in returns]
        per_seed = " / ".join(f"{s:.0f}" for s in scores) or "–"
        lines.append(
            f"| {algo} | {','.join(str(r.seed) for r in group)} | "
            f"**{sweep.format_mean_std(scores)}** | {sweep.format_iqm(scores)} | {per_seed} | "
            f"{sweep.format_mean_std([r.best for r in group])} | "
            f"{statistics.fmean(r.seconds_per_epoch for r in group):.2f} |"
        )
    for name, (value, speed) in references.items():
        lines.append(f"| {name} ({speed:.2f} m/s) | – | **{value:.0f}** | – | – | – | – |")
    return "\n".join(lines)


def report(run_dirs: list[Path], args: argparse.Namespace, command: str) -> bool:
    runs, returns = sweep.evaluated_summaries(run_dirs, {"ring": args.epochs}, args.episodes)
    references = {
        "all human (the car drives like an average driver)": human_reference(args.episodes),
        "uniform flow (equilibrium speed, no waves)": uniform_reference(args.episodes),
    }
    complete = len(returns) == len(run_dirs)
    lines = sweep.report_preamble(
        "Ring: one learned car among 21 human drivers",
        command,
        f"one torch thread per run, {args.epochs} epochs × 32 steps × 64 worlds, seeds "
        f"{' '.join(map(str, args.seeds))}",
        runs,
    )
    if not complete:
        lines += [
            f"**Partial:** {len(returns)} of {len(run_dirs)} requested runs finished (only "
            "finished runs are evaluated); re-running the command resumes the others.",
            "",
        ]
    lines += [
        f"*Evaluation return*: the trained policy's mean action over {args.episodes} episodes "
        "of 1500 steps (150 s) from the task's warmed-up start states; the reward per step is "
        "the mean speed of the 22 cars over 10 m/s minus the headway penalty, −1 and the end "
        "on a collision, so 1500 steps at the uniform flow's speed and no penalty is the "
        "uniform row. mean ± std over seeds, interquartile mean with a 95 % stratified "
        "bootstrap interval (rliable). *Best training return*: each run's best smoothed "
        "return of the sampled actions. The references drive the same start states "
        "(evaluation seed 0); their speed is the cars' mean speed over the episode.",
        "",
        results_table(runs, returns, references),
        "",
        f"![learning curves]({args.out.with_suffix('.png').name})",
        "",
    ]
    sweep.write_report(args.out, "\n".join(lines), runs)
    return complete


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sweep.add_benchmark_arguments(
        parser,
        ALGOS,
        logdir="runs/ring",
        out="docs/results/ring_control.md",
        episodes=EVALUATION_EPISODES,
        episodes_help="1500-step evaluation episodes per run",
        quick_help="smoke run: 3 epochs, seed 1, 4 evaluation episodes, results under the "
        "logdir only",
    )
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.seeds, args.episodes = 3, [1], 4
        sweep.use_quick_paths(args)
    command = "python benchmarks/ring_control.py" + (
        " --quick" if args.quick else f" --seeds {' '.join(map(str, args.seeds))}"
    )
    sweep.sweep_and_report(
        args,
        ["ring"],
        {"ring": args.epochs},
        overrides=[],
        report=lambda run_dirs: report(run_dirs, args, command),
    )


if __name__ == "__main__":
    main()
