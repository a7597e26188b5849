"""Demo: the 10-lane pace car with a scripted pace car that weaves in front of the human drivers.

Simulates a batch of worlds, prints a summary, and writes a rendered PNG frame and a short video of
world 0 (MP4, or GIF when ``--video`` ends in ``.gif``)::

    python examples/demo.py                      # out/pace_car_10lane.png, out/pace_car_10lane.mp4
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import difftraffic
from difftraffic.render import RenderConfig, Renderer, write_video
from difftraffic.scenarios.pace_car import WeavingPaceCar


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, default=16, help="worlds simulated (default 16)")
    parser.add_argument("--steps", type=int, default=300, help="steps of dt 0.03 s (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--frame", type=Path, default=Path("out/pace_car_10lane.png"))
    parser.add_argument("--video", type=Path, default=Path("out/pace_car_10lane.mp4"))
    parser.add_argument("--every", type=int, default=1, help="keep every k-th frame (default 1)")
    parser.add_argument("--width", type=int, default=960, help="frame width in px")
    parser.add_argument("--height", type=int, default=540, help="frame height in px")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    env = difftraffic.PaceCarEnv("10lane", num_envs=args.worlds, seed=args.seed)
    pace_car = WeavingPaceCar(env.task.dt)
    zoom = 8.0 * args.width / 960
    renderer = Renderer(env.task.road, RenderConfig(args.width, args.height, zoom=zoom))
    stats = {"human speed": [], "reward": [], "episodes ended": 0}
    frames: list[np.ndarray] = []

    def rollout() -> Iterator[np.ndarray]:
        with torch.no_grad():
            obs, _ = env.reset(seed=args.seed)
            for index in range(args.steps):
                obs, reward, terminated, truncated, _ = env.step(pace_car(obs))
                stats["human speed"].append(env.state.v[:, 1:].mean().item())
                stats["reward"].append(reward.mean().item())
                stats["episodes ended"] += int((terminated | truncated).sum())
                if index % args.every == 0:
                    frames.append(renderer.render(env.require_worlds()[0], 0, **env.overlay(0)))
                    yield frames[-1]

    video = write_video(rollout(), args.video, fps=1.0 / (env.task.dt * args.every))
    args.frame.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frames[len(frames) * 2 // 3]).save(args.frame)
    print(f"10-lane pace car, {args.worlds} worlds x {args.steps} steps ({env.task.dt} s each)")
    target = env.task.config.target_speed
    human_speed = np.mean(stats["human speed"])
    print(f"  mean human speed   {human_speed:6.2f} m/s (target {target:g} m/s)")
    print(f"  mean step reward   {np.mean(stats['reward']):6.3f}")
    print(f"  episodes ended     {stats['episodes ended']}")
    print(f"wrote {args.frame}")
    print(f"wrote {video}")


if __name__ == "__main__":
    main()
