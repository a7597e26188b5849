"""MOBIL lane changes here and in highway-env, on the same 3-lane road from the same start.

Each seed draws one traffic situation: ``--per-lane`` cars in each of 3 lanes, 25-40 m apart
(centre to centre), starting at 20-25 m/s with desired speeds of 20-30 m/s. Both simulators run
it for ``--seconds`` at highway-env's 15 Hz with highway-env's IDM and MOBIL settings
(``IDMVehicle``: a = 3, b = 5 m/s^2, T = 1.5 s, 5 m standstill gap, delta = 4; politeness 0,
threshold 0.2 m/s^2, b_safe = 2 m/s^2, no keep-right bias) and lane changes of highway-env's
measured duration. Reported per simulator: lane changes per car and minute (a car whose nearest
lane centre changes), collisions, the mean speed at the end, and wall time. Here every seed
runs as one world of a single batch. Then what lane changes cost this simulator: the same worlds
with and without MOBIL, per vehicle-step, on the default (fused) and the eager path. Writes
``docs/results/lane_changes.md``.

Usage::

    pip install -e '.[bench]'          # highway-env
    python benchmarks/lane_changes.py  # 5 seeds, 120 s
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from difftraffic import MOBIL, IDMParams, Road, TrafficState, step
from difftraffic_rl import sweep

LANES = 3
LANE_WIDTH = 4.0
LENGTH, WIDTH = 5.0, 2.0
DT = 1 / 15
SPEED_LIMIT = 40.0
HIGHWAY_ENV_CHANGE = 1.7
"""s: the median time a highway-env IDMVehicle takes from deciding a change to reaching the new
lane's centre (within 0.1 m), measured on this scenario; our changes take the same."""

IDM = {"T": 1.5, "a": 3.0, "b": 5.0, "s0": 5.0, "delta": 4.0}
LANE_CHANGE = MOBIL(
    politeness=0.0, threshold=0.2, b_safe=2.0, keep_right=0.0, duration=HIGHWAY_ENV_CHANGE
)


def situation(seed: int, per_lane: int) -> dict[str, np.ndarray]:
    """One seed's cars: lane, centre position (m), speed and desired speed (m/s), ``[N]`` each."""
    rng = np.random.default_rng(seed)
    lane = np.repeat(np.arange(LANES), per_lane)
    centre = np.concatenate([np.cumsum(rng.uniform(25.0, 40.0, per_lane)) for _ in range(LANES)])
    return {
        "lane": lane,
        "centre": centre,
        "speed": rng.uniform(20.0, 25.0, lane.size),
        "desired": rng.uniform(20.0, 30.0, lane.size),
    }


ROAD = Road.straight(LANES, LANE_WIDTH, SPEED_LIMIT)


def worlds(cars: list[dict[str, np.ndarray]]) -> tuple[TrafficState, IDMParams]:
    """Every situation as one world of a batch: the state and the drivers, ``[B, N]``."""

    def column(name: str) -> torch.Tensor:
        return torch.tensor(np.stack([c[name] for c in cars]), dtype=torch.float64)

    lane = column("lane")
    state = TrafficState(
        x=column("centre") + LENGTH / 2,
        y=(lane + 0.5) * LANE_WIDTH,
        v=column("speed"),
        heading=torch.zeros_like(lane),
        length=torch.full_like(lane, LENGTH),
        width=torch.full_like(lane, WIDTH),
        is_av=torch.zeros_like(lane, dtype=torch.bool),
        active=torch.ones_like(lane, dtype=torch.bool),
    )
    return state, IDMParams(v0=column("desired"), **IDM)


def run_ours(cars: list[dict[str, np.ndarray]], steps: int) -> dict[str, np.ndarray]:
    """Every situation as one world of a batch; per world: changes, collisions, mean speed."""
    state, drivers = worlds(cars)
    changes = torch.zeros(len(cars))
    collisions = torch.zeros(len(cars), dtype=torch.bool)
    neighbors = None
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(steps):
            result = step(state, ROAD, drivers, DT, neighbors=neighbors, lane_changes=LANE_CHANGE)
            moved = ROAD.nearest_lane(result.state.y) != ROAD.nearest_lane(state.y)
            changes += moved.sum(1)
            collisions |= result.collided.any(1)
            state, neighbors = result.state, result.neighbors
    seconds = time.perf_counter() - start
    return {
        "changes": changes.numpy(),
        "collisions": collisions.numpy(),
        "speed": state.v.mean(1).numpy(),
        "seconds": np.full(len(cars), seconds),
    }


def run_highway_env(cars: dict[str, np.ndarray], steps: int, seed: int) -> dict[str, float]:
    """One situation in highway-env: its road, its IDMVehicle, its 15 Hz step."""
    from highway_env.road.road import Road as HighwayRoad
    from highway_env.road.road import RoadNetwork
    from highway_env.vehicle.behavior import IDMVehicle

    network = RoadNetwork.straight_road_network(LANES, length=20_000.0, speed_limit=SPEED_LIMIT)
    road = HighwayRoad(network, np_random=np.random.RandomState(seed), record_history=False)
    for lane, centre, speed, desired in zip(
        cars["lane"], cars["centre"], cars["speed"], cars["desired"], strict=True
    ):
        on = network.get_lane(("0", "1", int(lane)))
        vehicle = IDMVehicle(
            road, on.position(centre, 0.0), on.heading_at(centre), speed, target_speed=desired
        )
        road.vehicles.append(vehicle)
    lanes = [v.lane_index[2] for v in road.vehicles]
    changes = 0
    start = time.perf_counter()
    for _ in range(steps):
        road.act()
        road.step(DT)
        now = [v.lane_index[2] for v in road.vehicles]
        changes += sum(a != b for a, b in zip(now, lanes, strict=True))
        lanes = now
    return {
        "changes": changes,
        "collisions": any(v.crashed for v in road.vehicles),
        "speed": float(np.mean([v.speed for v in road.vehicles])),
        "seconds": time.perf_counter() - start,
    }


def seconds_per_vehicle_step(
    state: TrafficState, drivers: IDMParams, steps: int, lane_changes: MOBIL | None, path: str
) -> float:
    """Wall time (s) per vehicle-step of ``steps`` steps from ``state``."""
    current, neighbors = state, None
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(steps):
            result = step(
                current,
                ROAD,
                drivers,
                DT,
                neighbors=neighbors,
                lane_changes=lane_changes,
                path=path,
            )
            current, neighbors = result.state, result.neighbors
    return (time.perf_counter() - start) / steps / state.x.numel()


def cost_of_lane_changes(
    cars: list[dict[str, np.ndarray]], batches: list[int], repeats: int
) -> list[list[str]]:
    """Rows of the cost table: per batch (the situations tiled) and path (default, eager), µs
    per vehicle-step without and with MOBIL, each the best of ``repeats`` timings taken in
    turns, and their ratio."""
    rows = []
    for batch in batches:
        tiled = [cars[k % len(cars)] for k in range(batch)]
        state, drivers = worlds(tiled)
        steps = 150  # 10 s
        for path, name in (("auto", "default (fused)"), ("eager", "eager")):
            without, with_mobil = [], []
            for _ in range(repeats):
                without.append(seconds_per_vehicle_step(state, drivers, steps, None, path))
                with_mobil.append(
                    seconds_per_vehicle_step(state, drivers, steps, LANE_CHANGE, path)
                )
            rows.append(
                [
                    f"{batch}×{state.x.shape[1]}",
                    name,
                    f"{min(without) * 1e6:.3f}",
                    f"{min(with_mobil) * 1e6:.3f}",
                    f"**{min(with_mobil) / min(without):.2f}×**",
                ]
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--per-lane", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=Path("docs/results/lane_changes.md"))
    parser.add_argument(
        "--cost-batches",
        type=int,
        nargs="+",
        default=[5, 256],
        help="batch sizes at which the cost of lane changes is timed",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timings of each cost, taken in turns (best kept)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps = round(args.seconds / DT)
    cars = [situation(seed, args.per_lane) for seed in args.seeds]
    n = LANES * args.per_lane
    minutes = args.seconds / 60
    ours = run_ours(cars, steps)
    costs = cost_of_lane_changes(cars, args.cost_batches, args.repeats)
    theirs = [run_highway_env(c, steps, seed) for c, seed in zip(cars, args.seeds, strict=True)]
    rows = []
    for index, seed in enumerate(args.seeds):
        mine, other = ours, theirs[index]
        rows.append(
            [
                str(seed),
                f"{mine['changes'][index] / n / minutes:.3f}",
                f"{other['changes'] / n / minutes:.3f}",
                str(bool(mine["collisions"][index])),
                str(other["collisions"]),
                f"{mine['speed'][index]:.1f}",
                f"{other['speed']:.1f}",
            ]
        )
    our_rate = ours["changes"].sum() / n / minutes / len(cars)
    their_rate = sum(t["changes"] for t in theirs) / n / minutes / len(cars)
    our_time = ours["seconds"][0] / steps / (n * len(cars))
    their_time = sum(t["seconds"] for t in theirs) / steps / (n * len(cars))
    text = "\n".join(
        [
            *sweep.report_preamble(
                "MOBIL lane changes: difftraffic and highway-env",
                f"python benchmarks/lane_changes.py --per-lane {args.per_lane} "
                f"--seconds {args.seconds:g}",
                f"{LANES} lanes x {args.per_lane} cars, {args.seconds:g} s at 15 Hz, one torch "
                "thread, float64",
            ),
            "Same start and settings in both (see the benchmark's docstring); highway-env "
            "measures IDM gaps centre to centre, difftraffic bumper to bumper (the same "
            "5 m at standstill), and highway-env reconsiders lanes once a second, difftraffic "
            "every step.",
            "",
            sweep.markdown_table(
                [
                    "seed",
                    "lane changes / car / min (ours)",
                    "(highway-env)",
                    "collision (ours)",
                    "(highway-env)",
                    "mean speed at the end, m/s (ours)",
                    "(highway-env)",
                ],
                rows,
            ),
            f"Mean over seeds: **{our_rate:.3f}** lane changes per car and minute here, "
            f"**{their_rate:.3f}** in highway-env.",
            "",
            f"Wall time per vehicle-step: {our_time * 1e6:.2f} µs here (all seeds in one batch "
            f"of {len(cars)} worlds), {their_time * 1e6:.1f} µs in highway-env (one world at a "
            f"time): {their_time / our_time:.0f}x.",
            "",
            "## What lane changes cost",
            "",
            "The same situations for 10 s (tiled to the batch), µs per vehicle-step without "
            'and with MOBIL, on the default path (`path="auto"`: the fused C step, MOBIL\'s '
            "decisions and lateral motion included) and on the eager path; each the best of "
            f"{args.repeats} timings taken in turns. Issue 16's target: with lane changes "
            "within 2× of without.",
            "",
            sweep.markdown_table(
                ["B×N", "path", "without lane changes", "with MOBIL", "with / without"],
                costs,
            ),
        ]
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
