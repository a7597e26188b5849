"""Record SUMO's car-following trajectories for platoons behind a leader whose speed is imposed.

Writes, for each platoon of :data:`PLATOONS`, ``tests/difftraffic/data/<name>.csv`` (one row per
0.1 s step: front-bumper position and speed of the leader and of every follower) and a ``.json``
beside it holding each follower's model and parameters, which
``tests/difftraffic/test_sumo_validation.py`` replays in difftraffic:

* ``sumo_idm_stop_and_go``: three IDM drivers behind a stop-and-go leader;
* ``sumo_krauss_braking``: four heterogeneous Krauss drivers (SUMO's default model, ``sigma=0``)
  behind a leader that brakes at up to 10 m/s^2, so that SUMO's emergency braking is exercised;
* ``sumo_mixed``: IDM and Krauss drivers alternating in one platoon.

SUMO is configured so that its models are exactly the ones difftraffic implements:

* IDM: ``carFollowModel="IDM"`` with ``tau``, ``accel``, ``decel``, ``minGap`` (= s0), ``delta``
  set, ``stepping`` equal to the step length so that SUMO integrates the IDM in one iteration
  per step, ``emergencyDecel`` large so SUMO never clips the IDM's braking (``apparentDecel``,
  what its Krauss followers assume of it, stays ``decel``);
* Krauss: ``carFollowModel="Krauss"``, ``sigma="0"``, every driver and the leader with the same
  ``decel`` (SUMO estimates the leader's braking distance with the larger of the two decelerations,
  difftraffic with the follower's own);
* ``speedFactor`` 1 and ``speedDev`` 0, so the desired speed is ``min(maxSpeed, lane speed)``;
* default semi-implicit Euler position update, ``--step-length 0.1``.

The leader's speed is imposed with ``setSpeed`` (all safety checks off); the test replays the
leader's recorded positions and speeds, so only the followers' dynamics are compared.

Needs ``eclipse-sumo`` and ``libsumo`` (or ``traci``), which are *not* test dependencies
(``pip install -e '.[bench]'``)::

    .venv/bin/python benchmarks/validate_sumo.py
"""

from __future__ import annotations

import csv
import json
import subprocess
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parents[1] / "tests" / "difftraffic" / "data"

DT = 0.1
LENGTH = 5.0
START_SPEED = 10.0
IDM = {"v0": 20.0, "T": 1.0, "a": 2.6, "b": 4.5, "delta": 4.0, "s0": 2.5}
DEFAULT_LANE_SPEED = IDM["v0"]


@dataclass(frozen=True)
class Platoon:
    """A recording: a leader with an imposed speed profile and its followers.

    Attributes:
        name: file stem of the recording.
        followers: per follower, ``{"model": "idm" | "krauss", <parameters>}`` in difftraffic's
            names (see :func:`vtype`).
        gaps: bumper-to-bumper gap (m) of each follower to the car ahead at the start.
        profile: ``(time s, leader speed m/s)`` knots, linearly interpolated.
        lane_speed: the road's speed limit (m/s).
        steps: steps of ``DT`` recorded.
        leader_start: the leader's front-bumper position (m) at the start.
    """

    name: str
    followers: list[dict[str, Any]]
    gaps: list[float]
    profile: list[tuple[float, float]]
    lane_speed: float = DEFAULT_LANE_SPEED
    steps: int = 600
    leader_start: float = 120.0


STOP_AND_GO = [
    (0.0, 10.0),
    (8.0, 10.0),
    (13.0, 0.0),
    (18.0, 0.0),
    (26.0, 12.0),
    (32.0, 12.0),
    (36.0, 2.0),
    (40.0, 2.0),
    (48.0, 14.0),
    (52.0, 0.0),
    (54.0, 0.0),
    (60.0, 8.0),
]
BRAKING = [
    (0.0, 10.0),
    (6.0, 14.0),
    (9.0, 14.0),
    (11.0, 2.0),  # 6 m/s^2
    (14.0, 0.0),
    (18.0, 0.0),
    (24.0, 12.0),
    (28.0, 12.0),
    (30.0, 0.0),
    (34.0, 0.0),
    (40.0, 15.0),
    (46.0, 15.0),
    (47.5, 0.0),  # 10 m/s^2: followers need more than their comfortable deceleration
    (55.0, 0.0),
    (60.0, 8.0),
]
KRAUSS_DRIVERS = [
    {"model": "krauss", "v0": 20.0, "T": 1.0, "a": 2.6, "b": 4.5, "s0": 2.5},
    {"model": "krauss", "v0": 18.0, "T": 1.4, "a": 1.8, "b": 4.5, "s0": 2.0},
    {"model": "krauss", "v0": 22.0, "T": 0.8, "a": 3.2, "b": 4.5, "s0": 3.0},
    {"model": "krauss", "v0": 25.0, "T": 1.2, "a": 2.2, "b": 4.5, "s0": 1.5},
]
PLATOONS = [
    Platoon("sumo_idm_stop_and_go", [{"model": "idm", **IDM}] * 3, [15.0, 11.0, 20.0], STOP_AND_GO),
    Platoon(
        "sumo_krauss_braking",
        KRAUSS_DRIVERS,
        [15.0, 11.0, 20.0, 8.0],
        BRAKING,
        lane_speed=30.0,
        leader_start=160.0,
    ),
    Platoon(
        "sumo_mixed",
        [
            KRAUSS_DRIVERS[0],
            {"model": "idm", **IDM},
            KRAUSS_DRIVERS[1],
            {"model": "idm", **dict(IDM, T=1.5, a=1.5, s0=2.0)},
        ],
        [15.0, 11.0, 20.0, 8.0],
        BRAKING,
        lane_speed=30.0,
        leader_start=160.0,
    ),
]


def leader_speed(profile: list[tuple[float, float]], t: float) -> float:
    """Leader speed (m/s) at time ``t`` (s), piecewise linear in ``profile``."""
    for (t0, v0), (t1, v1) in zip(profile[:-1], profile[1:], strict=True):
        if t0 <= t <= t1:
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return profile[-1][1]


def sumo_binary(name: str) -> str:
    import sumo

    return str(Path(sumo.SUMO_HOME) / "bin" / name)


def write_network(
    folder: Path, num_lanes: int = 1, length: float = 5000.0, speed: float = DEFAULT_LANE_SPEED
) -> Path:
    """A straight SUMO road ``"road"`` of ``num_lanes`` lanes, ``length`` m, speed limit
    ``speed`` (m/s)."""
    (folder / "road.nod.xml").write_text(
        f'<nodes><node id="a" x="0" y="0"/><node id="b" x="{length}" y="0"/></nodes>\n'
    )
    (folder / "road.edg.xml").write_text(
        f'<edges><edge id="road" from="a" to="b" numLanes="{num_lanes}" speed="{speed}"/></edges>\n'
    )
    net = folder / "road.net.xml"
    subprocess.run(
        [
            sumo_binary("netconvert"),
            "--node-files",
            str(folder / "road.nod.xml"),
            "--edge-files",
            str(folder / "road.edg.xml"),
            "--output-file",
            str(net),
            "--no-turnarounds",
            "true",
        ],
        check=True,
        capture_output=True,
    )
    return net


def vtype(type_id: str, driver: dict[str, Any]) -> str:
    """A SUMO vehicle type whose model is exactly difftraffic's ``driver`` (module docstring)."""
    common = (
        f'id="{type_id}" length="{LENGTH}" minGap="{driver["s0"]}" accel="{driver["a"]}" '
        f'decel="{driver["b"]}" tau="{driver["T"]}" maxSpeed="{driver["v0"]}" '
        'speedFactor="1" speedDev="0" sigma="0"'
    )
    if driver["model"] == "idm":
        return (
            f'<vType {common} carFollowModel="IDM" emergencyDecel="100" '
            f'apparentDecel="{driver["b"]}" '
            f'delta="{driver["delta"]}" stepping="{DT}"/>'
        )
    emergency = driver.get("b_emergency", 9.0)
    return f'<vType {common} carFollowModel="Krauss" emergencyDecel="{emergency}"/>'


IDM_VTYPE = vtype("idm", {"model": "idm", **IDM})
"""A SUMO vehicle type whose IDM is exactly difftraffic's default test driver."""
LEADER_VTYPE = (
    f'<vType id="leader" length="{LENGTH}" accel="10" decel="{IDM["b"]}" emergencyDecel="10" '
    'maxSpeed="50" speedFactor="1" speedDev="0" sigma="0"/>'
)
"""The leader (its speed is imposed); its ``decel`` is the followers', see the docstring."""


def write_routes(folder: Path, platoon: Platoon) -> tuple[Path, list[str]]:
    ids = [f"car{i}" for i in range(len(platoon.followers) + 1)]
    types = ["leader"] + [f"driver{i}" for i in range(len(platoon.followers))]
    positions = [platoon.leader_start]
    for gap in platoon.gaps:
        positions.append(positions[-1] - LENGTH - gap)
    vtypes = LEADER_VTYPE + "".join(
        vtype(type_id, driver) for type_id, driver in zip(types[1:], platoon.followers, strict=True)
    )
    vehicles = "".join(
        f'<vehicle id="{vid}" type="{type_id}" route="r" depart="0" departPos="{pos}" '
        f'departSpeed="{START_SPEED}" insertionChecks="none"/>'
        for vid, type_id, pos in zip(ids, types, positions, strict=True)
    )
    routes = folder / "platoon.rou.xml"
    routes.write_text(f'<routes>{vtypes}<route id="r" edges="road"/>{vehicles}</routes>\n')
    return routes, ids


def simulate(net: Path, routes: Path, ids: list[str], platoon: Platoon) -> list[list[float]]:
    try:
        import libsumo as sumo_api
    except ImportError:
        import traci as sumo_api

    sumo_api.start(
        [
            sumo_binary("sumo"),
            "--net-file",
            str(net),
            "--route-files",
            str(routes),
            "--step-length",
            str(DT),
            "--collision.action",
            "warn",
            "--no-step-log",
            "true",
            "--no-warnings",
            "true",
        ]
    )
    try:
        sumo_api.simulationStep()  # inserts every vehicle at its departPos
        leader = ids[0]
        sumo_api.vehicle.setSpeedMode(leader, 0)
        rows = []
        for k in range(platoon.steps + 1):
            row = [round(k * DT, 1)]
            for vid in ids:
                row += [sumo_api.vehicle.getLanePosition(vid), sumo_api.vehicle.getSpeed(vid)]
            rows.append(row)
            if k < platoon.steps:
                sumo_api.vehicle.setSpeed(leader, leader_speed(platoon.profile, (k + 1) * DT))
                sumo_api.simulationStep()
        return rows
    finally:
        sumo_api.close()


def record(platoon: Platoon) -> None:
    """Simulate ``platoon`` in SUMO and write its ``.csv`` and ``.json``."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        net = write_network(folder, speed=platoon.lane_speed)
        routes, ids = write_routes(folder, platoon)
        rows = simulate(net, routes, ids, platoon)
    csv_path = DATA_DIR / f"{platoon.name}.csv"
    header = ["t"] + [f"{name}_{vid}" for vid in ids for name in ("x", "v")]
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([f"{row[0]:.1f}"] + [f"{value:.6f}" for value in row[1:]])
    models = sorted({d["model"] for d in platoon.followers})
    meta = {
        "simulator": f"SUMO {version('eclipse-sumo')} (libsumo), carFollowModel "
        + " and ".join(models),
        "dt": DT,
        "steps": platoon.steps,
        "length": LENGTH,
        "lane_speed": platoon.lane_speed,
        "followers": platoon.followers,
        "leader_profile": platoon.profile,
    }
    (DATA_DIR / f"{platoon.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {csv_path} ({len(rows)} rows) and its .json")


def main() -> None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for platoon in PLATOONS:
        record(platoon)


if __name__ == "__main__":
    main()
