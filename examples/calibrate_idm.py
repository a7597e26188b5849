"""Calibrate IDM drivers to trajectories: simulate a platoon of known drivers, fit them back.

A stop-and-go lead car and ``--drivers`` followers with parameters drawn per driver are simulated
by ``difftraffic.step``, written as a trajectory CSV (with measurement noise if asked), fitted by
``difftraffic.calibration`` all at once, and compared with the truth. Writes the table and a plot
of observed against replayed gaps for four drivers::

    python examples/calibrate_idm.py                       # clean data
    python examples/calibrate_idm.py --noise               # 0.3 m position, 0.2 m/s speed noise
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from difftraffic import Driver, Road, ScenarioBuilder, step
from difftraffic.calibration import calibrate, read_trajectories, replay, write_trajectories
from difftraffic.idm import IDMParams

NAMES = ("v0", "T", "a", "b", "s0")
RANGES = {"v0": (28.0, 36.0), "T": (0.8, 1.8), "a": (1.0, 2.5), "b": (1.5, 3.5), "s0": (1.5, 3.0)}
DT = 0.1
STEPS = 600


def lead_acceleration(k: int) -> float:
    """The lead car speeds up, brakes to a stop, waits, and speeds up again (m/s²)."""
    t = k * DT
    return 1.5 if t < 10 else -3.0 if t < 19 else 0.0 if t < 30 else 2.0 if t < 42 else 0.0


def simulate(path: Path, drivers: int, seed: int) -> dict[str, torch.Tensor]:
    """Simulate the platoon, write its trajectories, return the true parameters ``[drivers]``."""
    generator = torch.Generator().manual_seed(seed)
    truth = {
        n: low + (high - low) * torch.rand(drivers, generator=generator, dtype=torch.float64)
        for n, (low, high) in RANGES.items()
    }
    builder = ScenarioBuilder(Road.straight(num_lanes=1, speed_limit=40.0), dt=DT)
    builder = builder.vehicle(lane=0, x=40.0 * (drivers + 1), speed=10.0, autonomous=True)
    for d in range(drivers):
        driver = Driver(**{n: float(truth[n][d]) for n in NAMES})
        builder = builder.vehicle(lane=0, x=40.0 * (drivers - d), speed=10.0, driver=driver)
    scenario = builder.build()
    state, params = scenario.sample(batch_size=1, seed=seed, dtype=torch.float64)
    states = [state]
    for k in range(STEPS - 1):
        acceleration = torch.where(state.is_av, lead_acceleration(k), 0.0).double()
        state = step(state, scenario.road, params, DT, av_acceleration=acceleration).state
        states.append(state)
    names = ["lead", *(f"car{d + 1}" for d in range(drivers))]
    write_trajectories(path, states, scenario.road, DT, vehicle_ids=names)
    return truth


def in_file_order(
    truth: dict[str, torch.Tensor], vehicle_ids: list[str]
) -> dict[str, torch.Tensor]:
    """The true parameters of followers ``car<k>`` in the order the trajectory file's reader
    lists them (by name: car1, car10, car11, ..., car2)."""
    order = [int(v.removeprefix("car")) - 1 for v in vehicle_ids]
    return {n: truth[n][order] for n in NAMES}


def add_noise(path: Path, position: float, speed: float, seed: int) -> None:
    """Add Gaussian measurement noise to the positions and speeds of a trajectory file."""
    generator = torch.Generator().manual_seed(seed + 1)
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        noise = torch.randn(2, generator=generator, dtype=torch.float64)
        row["position"] = repr(float(row["position"]) + position * float(noise[0]))
        row["speed"] = repr(max(0.0, float(row["speed"]) + speed * float(noise[1])))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drivers", type=int, default=12)
    parser.add_argument("--noise", action="store_true", help="0.3 m / 0.2 m/s measurement noise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/calibration"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "trajectories.csv"
    truth = simulate(path, args.drivers, args.seed)
    if args.noise:
        add_noise(path, 0.3, 0.2, args.seed)
    data = read_trajectories(path)
    start = time.perf_counter()
    result = calibrate(data, seed=args.seed)
    print(f"fitted {len(result.vehicle_ids)} drivers in {time.perf_counter() - start:.1f} s")
    result.save(args.out / "fitted.csv")
    truth = in_file_order(truth, result.vehicle_ids)
    true_gap_rmse = (replay(data, IDMParams(**truth))[0] - data.gap).square().mean(-1).sqrt()
    print("parameter  median |error|  max |error|   (relative to the truth)")
    for n in NAMES:
        error = (result.params[n] - truth[n]).abs() / truth[n]
        print(f"{n:9s}  {100 * error.median():12.2f} %  {100 * error.max():9.2f} %")
    print(
        f"gap RMSE: fitted {result.gap_rmse.median():.3f} m (median), "
        f"true parameters {true_gap_rmse.median():.3f} m on the same data; worst driver's "
        f"fitted / true: {(result.gap_rmse / true_gap_rmse.clamp_min(1e-12)).max():.2f}"
    )
    plot(data, result, args.out / "gaps.png")
    print(f"written: {args.out}/fitted.csv, {args.out}/gaps.png")


def plot(data, result, out: Path) -> None:  # type: ignore[no-untyped-def]
    """Observed and replayed gaps of the first four followers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gap, _ = replay(data, IDMParams(**result.params))
    seconds = torch.arange(data.gap.shape[-1]) * data.dt
    figure, axes = plt.subplots(2, 2, figsize=(9, 5), sharex=True)
    for d, axis in enumerate(axes.flat[: len(result.vehicle_ids)]):
        axis.plot(seconds, data.gap[d], ".", markersize=2, label="observed")
        axis.plot(seconds, gap[d].detach(), label="replayed, fitted")
        axis.set_title(f"{result.vehicle_ids[d]} behind {result.leader_ids[d]}")
        axis.set_ylabel("gap (m)")
    for axis in axes[-1]:
        axis.set_xlabel("time (s)")
    axes.flat[0].legend()
    figure.tight_layout()
    figure.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
