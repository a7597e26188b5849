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
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from difftraffic.idm import idm_acceleration
from difftraffic.policy import load_policy
from difftraffic.scenarios.ring import WARMUP_DRIVER, RingTask, uniform_flow_speed
from difftraffic.scenarios.ring_env import RingEnv
from difftraffic_rl import sweep
from difftraffic_rl.algorithms import get_algorithm

ALGOS = ("gippo", "ppo", "rp")
EPOCHS = 500
EVALUATION_EPISODES = 32
EVALUATION_SEED = 0
"""Seed of the evaluation environment, as :func:`difftraffic_rl.training.evaluate` uses."""

HUMAN_ACCELERATION_SCALE = 100.0
"""m/s^2 per unit action while the reference car drives like a human: wide enough that the IDM's
braking is never clipped."""


Controller = Callable[[RingEnv, Tensor], Tensor]


def drive(controller: Controller, episodes: int, task_kwargs: dict[str, Any]) -> dict[str, float]:
    """One episode in each of ``episodes`` worlds from the evaluation's start states; per world
    until its episode ends: the return, the cars' mean speed (m/s) and their spread (standard
    deviation over the 22 cars, m/s: the waves), averaged over steps and then worlds."""
    env = RingEnv(episodes, task_kwargs, seed=EVALUATION_SEED)
    obs, _ = env.reset()
    total = torch.zeros(episodes, dtype=torch.float64)
    speed = torch.zeros(episodes, dtype=torch.float64)
    spread = torch.zeros(episodes, dtype=torch.float64)
    steps = torch.zeros(episodes, dtype=torch.float64)
    running = torch.ones(episodes, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(env.task.max_episode_steps):
            state, _ = env.require_worlds()
            live = running.double()
            speed += live * state.v.mean(-1).double()
            spread += live * state.v.std(-1).double()
            steps += live
            obs, reward, terminated, truncated, _ = env.step(controller(env, obs))
            total += live * reward.double()
            running &= ~(terminated | truncated)
    return {
        "return": float(total.mean()),
        "speed": float((speed / steps).mean()),
        "spread": float((spread / steps).mean()),
    }


def human_controller(env: RingEnv, obs: Tensor) -> Tensor:
    """The automated car driven like an average human (:data:`WARMUP_DRIVER`)."""
    state, _ = env.require_worlds()
    gap, lead_speed = env.task.leader(state)
    acceleration = idm_acceleration(state.v[:, 0], lead_speed, gap.clamp_min(0.1), WARMUP_DRIVER)
    return (acceleration / HUMAN_ACCELERATION_SCALE).unsqueeze(1)


def policy_evaluation(run_dir: Path, episodes: int) -> dict[str, float]:
    """:func:`drive` with a finished run's exported policy (mean action), cached in
    ``<run_dir>/ring_evaluation.json`` per number of episodes."""
    cache = run_dir / "ring_evaluation.json"
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("episodes") == episodes:
            return {k: float(v) for k, v in cached.items() if k != "episodes"}
    policy = load_policy(run_dir, obs_dim=RingTask.obs_dim)
    result = drive(lambda env, obs: policy(obs), episodes, {})
    cache.write_text(json.dumps({**result, "episodes": episodes}, indent=2))
    return result


def uniform_reference(episodes: int) -> dict[str, float]:
    """Return and speed (m/s) of the uniform flow of the evaluation's drivers: every car at the
    equilibrium speed for a whole episode (an upper reference; no headway penalty, no spread)."""
    task = RingTask()
    generator = torch.Generator().manual_seed(EVALUATION_SEED)
    _, drivers = task.initial(episodes, generator, None, torch.float64)
    config = task.config
    speed = uniform_flow_speed(drivers, config.length, config.vehicle_length)
    per_episode = speed / task.speed_scale * task.max_episode_steps
    return {"return": float(per_episode.mean()), "speed": float(speed.mean()), "spread": 0.0}


def results_table(
    runs: list[sweep.RunSummary],
    evaluations: dict[Path, dict[str, float]],
    references: dict[str, dict[str, float]],
) -> str:
    lines = [
        "| controller | seeds | evaluation return | IQM [95 % CI] | per seed | mean speed "
        "(m/s) | speed spread (m/s) | best training return | s / epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, algo, group in sweep.grouped_runs(runs, ["ring"], list(ALGOS)):
        done = [evaluations[r.run_dir] for r in group if r.run_dir in evaluations]
        scores = [e["return"] for e in done]
        lines.append(
            f"| {get_algorithm(algo).label} | {','.join(str(r.seed) for r in group)} | "
            f"**{sweep.format_mean_std(scores)}** | {sweep.format_iqm(scores)} | "
            f"{' / '.join(f'{s:.0f}' for s in scores) or '–'} | "
            f"{sweep.format_mean_std([e['speed'] for e in done])} | "
            f"{sweep.format_mean_std([e['spread'] for e in done])} | "
            f"{sweep.format_mean_std([r.best for r in group])} | "
            f"{statistics.fmean(r.seconds_per_epoch for r in group):.2f} |"
        )
    for name, result in references.items():
        lines.append(
            f"| {name} | – | **{result['return']:.0f}** | – | – | {result['speed']:.2f} | "
            f"{result['spread']:.2f} | – | – |"
        )
    return "\n".join(lines)


def report(run_dirs: list[Path], args: argparse.Namespace, command: str) -> bool:
    runs = sweep.run_summaries([d for d in run_dirs if (d / "progress.csv").exists()])
    evaluations = {
        r.run_dir: policy_evaluation(r.run_dir, args.episodes)
        for r in runs
        if r.epochs == args.epochs
    }
    references = {
        "all human (the car drives like an average driver)": drive(
            human_controller, args.episodes, {"max_acceleration": HUMAN_ACCELERATION_SCALE}
        ),
        "uniform flow (equilibrium speed, no waves)": uniform_reference(args.episodes),
    }
    complete = len(evaluations) == len(run_dirs)
    lines = sweep.report_preamble(
        "Ring: one learned car among 21 human drivers",
        command,
        f"one torch thread per run, {args.epochs} epochs × 32 steps × 64 worlds, seeds "
        f"{' '.join(map(str, args.seeds))}",
        runs,
    )
    if not complete:
        lines += [
            f"**Partial:** {len(evaluations)} of {len(run_dirs)} requested runs finished (only "
            "finished runs are evaluated); re-running the command resumes the others.",
            "",
        ]
    lines += [
        f"*Evaluation*: the trained policy's mean action over {args.episodes} episodes of 1500 "
        "steps (150 s) from the task's warmed-up start states (evaluation seed 0, the same for "
        "every row). *Return*: the reward per step is the mean speed of the 22 cars over "
        "10 m/s minus the headway penalty, −1 and the end on a collision; mean ± std over "
        "seeds, interquartile mean with a 95 % stratified bootstrap interval (rliable). *Mean "
        "speed* and *speed spread* (the standard deviation of the cars' speeds: the waves) "
        "are averaged over each episode's steps, then over episodes and seeds. *Best training "
        "return*: each run's best smoothed return of the sampled actions. References: the car "
        "driven like an average human (the all-human ring) and the uniform flow of the same "
        "drivers (every car at the equilibrium speed for 1500 steps, no penalty).",
        "",
        results_table(runs, evaluations, references),
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
    command = " ".join(
        ["python benchmarks/ring_control.py"]
        + (["--quick"] if args.quick else ["--seeds", *map(str, args.seeds)])
        + sweep.override_arguments(args)
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
