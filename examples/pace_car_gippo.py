"""Train a pace car with GI-PPO on the differentiable traffic simulator, then watch it drive.

The pace car (blue) must hold the human drivers behind it (yellow, IDM) to 10 m/s. GI-PPO uses
the simulator's analytic gradients of the rewards with respect to the pace car's actions, which
are exact along the lanes and partial across lane changes (see docs/simulator.md).

    python examples/pace_car_gippo.py                          # 2 lanes, a few minutes on a CPU
    python examples/pace_car_gippo.py --variant 4lane --epochs 500 --device cuda

Writes, under --out: the training run (checkpoints, logs, the exported policy.pt2), the learning
curve (learning_curve.png), a video of one evaluation episode (pace_car.mp4) and one of its
frames (pace_car.png).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import torch

import difftraffic_rl
from difftraffic import PaceCarEnv
from difftraffic.policy import load_policy
from difftraffic.render import record_rollout
from difftraffic_rl.evaluation import episode_returns
from difftraffic_rl.plot import plot_runs
from difftraffic_rl.tasks import make_task


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variant", default="2lane", help="1lane, 2lane, 3lane, 4lane or 10lane (default 2lane)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=250,
        help="training epochs of 64 worlds x 32 steps (default 250; paper 500)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=3,
        help="random seed (default 3: the lowest of seeds 1-5 whose pace car clears 850 with "
        "its mean and its sampled actions alike; docs/pace_car.md)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument(
        "--eval-worlds",
        type=int,
        default=32,
        help="1000-step evaluation episodes per policy (default 32)",
    )
    parser.add_argument(
        "--video-steps",
        type=int,
        default=600,
        help="steps of 0.03 s in the video (default 600: 18 s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/pace_car_gippo"),
        help="output folder (default out/pace_car_gippo)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    task = f"pacecar-{args.variant}"

    # 1. Train GI-PPO with the paper's traffic hyperparameters (difftraffic_rl/configs/), but a
    # critic on normalized values: at this budget it holds the humans on 4 of seeds 1-5, where
    # the authors' un-normalized critic holds them on 1 (docs/pace_car.md#the-demos-seeds).
    result = difftraffic_rl.train(
        task=task,
        algo="gippo",
        seed=args.seed,
        epochs=args.epochs,
        device=args.device,
        logdir=args.out / "runs",
        hyperparameters={"normalize_value": True},
    )
    run_dir = result.run_dir

    # 2. Evaluate the trained policy (its mean action) against an idle and a random pace car.
    trained = load_policy(run_dir)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    policies = {
        "GI-PPO": trained,
        "idle": lambda obs: torch.zeros(obs.shape[0], 2, device=obs.device),
        "random": lambda obs: (
            torch.rand(obs.shape[0], 2, generator=generator, device=obs.device) * 2 - 1
        ),
    }
    env = make_task(task, args.eval_worlds, device=args.device)
    print(f"\nreturn over 1000-step episodes ({args.eval_worlds} worlds, maximum 1000):")
    for name, policy in policies.items():
        returns = episode_returns(env, policy, seed=args.seed)
        print(f"  {name:7s} {returns.mean():8.1f} ± {returns.std():6.1f}")

    # 3. The learning curve and a video of one evaluation episode.
    curve = plot_runs([run_dir], args.out / "learning_curve.png")
    video_env = PaceCarEnv(args.variant, num_envs=1, device=args.device)
    video = record_rollout(
        video_env, args.out / "pace_car.mp4", args.video_steps, trained, seed=args.seed
    )
    frame = args.out / "pace_car.png"
    iio.imwrite(frame, iio.imread(video, index=args.video_steps * 2 // 3))
    print(
        f"\nrun directory:  {run_dir}\nlearning curve: {curve}\nvideo:          {video}"
        f"\nframe:          {frame}"
    )


if __name__ == "__main__":
    main()
