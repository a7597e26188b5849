"""SUMO's own speed on the throughput benchmark's road, measured on this machine.

One SUMO world (libsumo, in process) of ``N`` IDM vehicles on a straight road of ``lanes`` lanes,
spaced like the difftraffic worlds, stepped ``steps`` times at dt = 0.1 s after a warm-up; the
vehicle type is the exact-IDM one of ``validate_sumo.py``. Returns vehicle-steps per second (the
median of several runs), or ``None`` where SUMO is not installed
(``pip install 'difftraffic[bench]'``; ``make bench`` does).

Usage::

    python benchmarks/sumo_speed.py 10 100 1000     # vehicle-steps/s for these N
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from validate_sumo import IDM_VTYPE, sumo_binary, write_network

DT = 0.1
DRIVE_ROOM = 6000.0
"""Road (m) ahead of the first vehicle, so nobody leaves it during the measurements."""
REPEATS = 5
"""Runs of ``steps`` steps whose median :func:`sumo_rate` reports (one run varies with load)."""

Measure = Callable[..., float]


@contextmanager
def sumo_world(vehicles: int, lanes: int = 4, spacing: float = 30.0) -> Iterator[Measure]:
    """One SUMO world (see the module docstring), warmed up; yields ``measure(steps,
    read_state=False)``, which steps it ``steps`` times and returns vehicle-steps/s. Raises
    ``ImportError`` where libsumo is not installed."""
    import libsumo

    per_lane = math.ceil(vehicles / lanes)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        net = write_network(folder, num_lanes=lanes, length=per_lane * spacing + DRIVE_ROOM)
        cars = "".join(
            f'<vehicle id="v{i}" type="idm" route="r" depart="0" departLane="{i % lanes}" '
            f'departPos="{(i // lanes) * spacing + 5.0}" departSpeed="10" '
            'insertionChecks="none"/>'
            for i in range(vehicles)
        )
        routes = folder / "cars.rou.xml"
        routes.write_text(f'<routes>{IDM_VTYPE}<route id="r" edges="road"/>{cars}</routes>\n')
        libsumo.start([
            sumo_binary("sumo"), "--net-file", str(net), "--route-files", str(routes),
            "--step-length", str(DT), "--no-step-log", "true", "--no-warnings", "true",
            "--lanechange.duration", "0", "--collision.action", "none",
        ])  # fmt: skip
        try:
            for _ in range(5):
                libsumo.simulationStep()
            running = libsumo.vehicle.getIDCount()
            if running != vehicles:
                raise RuntimeError(f"SUMO inserted {running} of {vehicles} vehicles")

            def measure(steps: int, read_state: bool = False) -> float:
                start = time.perf_counter()
                for _ in range(steps):
                    libsumo.simulationStep()
                    if read_state:
                        for vehicle in libsumo.vehicle.getIDList():
                            libsumo.vehicle.getPosition(vehicle)
                            libsumo.vehicle.getSpeed(vehicle)
                return vehicles * steps / (time.perf_counter() - start)

            yield measure
        finally:
            libsumo.close()


def sumo_rate(
    vehicles: int,
    lanes: int = 4,
    spacing: float = 30.0,
    steps: int = 100,
    read_state: bool = False,
    repeats: int = REPEATS,
) -> float | None:
    """Vehicle-steps/s of one SUMO world: the median of ``repeats`` runs of ``steps`` steps
    (see the module docstring); ``read_state`` also reads every vehicle's position and speed
    each step, as a controller would. ``None`` where SUMO is not installed."""
    try:
        with sumo_world(vehicles, lanes, spacing) as measure:
            return statistics.median(measure(steps, read_state) for _ in range(repeats))
    except ImportError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vehicles", nargs="+", type=int)
    parser.add_argument("--lanes", type=int, default=4)
    args = parser.parse_args()
    for n in args.vehicles:
        rate = sumo_rate(n, args.lanes)
        print(f"N = {n}: " + ("SUMO not installed" if rate is None else f"{rate / 1e6:.3f} M"))


if __name__ == "__main__":
    main()
