"""Train GI-PPO and PPO on Ackley 1-D from Python and compare them.

    python examples/function_optimization.py --epochs 300

Each run goes to runs/examples/<task>_<algo>_s<seed>_<time>/; plot them with
``difftraffic-rl plot runs/examples/* --out curves.png``.
"""

from __future__ import annotations

import argparse

import difftraffic_rl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="ackley")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for algo in ("ppo", "gippo"):
        result = difftraffic_rl.train(
            task=args.task, algo=algo, seed=args.seed, epochs=args.epochs, logdir="runs/examples"
        )
        best = max(row["reward_smoothed"] for row in result.metrics)
        print(f"{algo:>6}: best smoothed reward {best:.3e}  ({result.run_dir})")


if __name__ == "__main__":
    main()
