"""Record SUMO's IDM trajectories for a platoon behind a stop-and-go leader.

Writes ``tests/difftraffic/data/sumo_idm_stop_and_go.csv`` (one row per 0.1 s step: front-bumper
position and speed of the leader and of every follower) and a ``.json`` beside it holding the
parameters, which ``tests/difftraffic/test_sumo_validation.py`` replays in difftraffic.

SUMO is configured so that its IDM is exactly the model difftraffic implements:

* ``carFollowModel="IDM"`` with ``tau``, ``accel``, ``decel``, ``minGap`` (= s0), ``delta`` set,
  ``stepping`` equal to the step length so that SUMO integrates the IDM in one iteration per step;
* ``speedFactor`` 1 and ``speedDev`` 0, lane speed = ``maxSpeed`` = v0, so the desired speed is v0;
* ``emergencyDecel`` large so SUMO never clips the IDM's braking;
* default semi-implicit Euler position update, ``--step-length 0.1``.

The leader's speed is imposed with ``setSpeed`` (all safety checks off); the test replays the
leader's recorded positions and speeds, so only the followers' dynamics are compared.

Needs ``eclipse-sumo`` and ``libsumo`` (or ``traci``), which are *not* test dependencies:

    .venv/bin/pip install eclipse-sumo libsumo
    .venv/bin/python benchmarks/validate_sumo.py
"""

from __future__ import annotations

import csv
import json
import subprocess
import tempfile
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[1] / "tests" / "difftraffic" / "data"
CSV_PATH = DATA_DIR / "sumo_idm_stop_and_go.csv"
JSON_PATH = DATA_DIR / "sumo_idm_stop_and_go.json"

DT = 0.1
STEPS = 600
ROAD_LENGTH = 5000.0
IDM = {"v0": 20.0, "T": 1.0, "a": 2.6, "b": 4.5, "delta": 4.0, "s0": 2.5}
LENGTH = 5.0
LEADER_START = 120.0
FOLLOWER_GAPS = [15.0, 11.0, 20.0]
START_SPEED = 10.0

# (time s, leader speed m/s): the leader's speed is linearly interpolated between knots.
LEADER_PROFILE = [
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


def leader_speed(t: float) -> float:
    """Leader speed (m/s) at time ``t`` (s), piecewise linear in :data:`LEADER_PROFILE`."""
    for (t0, v0), (t1, v1) in zip(LEADER_PROFILE[:-1], LEADER_PROFILE[1:], strict=True):
        if t0 <= t <= t1:
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return LEADER_PROFILE[-1][1]


def sumo_binary(name: str) -> str:
    import sumo

    return str(Path(sumo.SUMO_HOME) / "bin" / name)


def write_network(folder: Path, num_lanes: int = 1, length: float = ROAD_LENGTH) -> Path:
    """A straight SUMO road ``"road"`` of ``num_lanes`` lanes and ``length`` m, speed limit v0."""
    (folder / "road.nod.xml").write_text(
        f'<nodes><node id="a" x="0" y="0"/><node id="b" x="{length}" y="0"/></nodes>\n'
    )
    (folder / "road.edg.xml").write_text(
        f'<edges><edge id="road" from="a" to="b" numLanes="{num_lanes}" speed="{IDM["v0"]}"/>'
        "</edges>\n"
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


IDM_VTYPE = (
    f'<vType id="idm" carFollowModel="IDM" length="{LENGTH}" minGap="{IDM["s0"]}" '
    f'accel="{IDM["a"]}" decel="{IDM["b"]}" emergencyDecel="100" apparentDecel="100" '
    f'tau="{IDM["T"]}" delta="{IDM["delta"]}" stepping="{DT}" maxSpeed="{IDM["v0"]}" '
    'speedFactor="1" speedDev="0" sigma="0"/>'
)
"""A SUMO vehicle type whose IDM is exactly difftraffic's (see the module docstring)."""


def write_routes(folder: Path) -> tuple[Path, list[str]]:
    vtype = IDM_VTYPE
    ids = [f"car{i}" for i in range(len(FOLLOWER_GAPS) + 1)]
    positions = [LEADER_START]
    for gap in FOLLOWER_GAPS:
        positions.append(positions[-1] - LENGTH - gap)
    vehicles = "".join(
        f'<vehicle id="{vid}" type="idm" route="r" depart="0" departPos="{pos}" '
        f'departSpeed="{START_SPEED}" insertionChecks="none"/>'
        for vid, pos in zip(ids, positions, strict=True)
    )
    routes = folder / "platoon.rou.xml"
    routes.write_text(f'<routes>{vtype}<route id="r" edges="road"/>{vehicles}</routes>\n')
    return routes, ids


def simulate(net: Path, routes: Path, ids: list[str]) -> list[list[float]]:
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
        for k in range(STEPS + 1):
            row = [round(k * DT, 1)]
            for vid in ids:
                row += [sumo_api.vehicle.getLanePosition(vid), sumo_api.vehicle.getSpeed(vid)]
            rows.append(row)
            if k < STEPS:
                sumo_api.vehicle.setSpeed(leader, leader_speed((k + 1) * DT))
                sumo_api.simulationStep()
        return rows
    finally:
        sumo_api.close()


def main() -> None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        net = write_network(folder)
        routes, ids = write_routes(folder)
        rows = simulate(net, routes, ids)
    import sumo

    header = ["t"] + [f"{name}_{vid}" for vid in ids for name in ("x", "v")]
    with CSV_PATH.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([f"{row[0]:.1f}"] + [f"{value:.6f}" for value in row[1:]])
    JSON_PATH.write_text(
        json.dumps(
            {
                "simulator": f"SUMO {sumo.__version__} (libsumo), carFollowModel IDM",
                "dt": DT,
                "steps": STEPS,
                "length": LENGTH,
                "idm": IDM,
                "leader_profile": LEADER_PROFILE,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {CSV_PATH} ({len(rows)} rows) and {JSON_PATH}")


if __name__ == "__main__":
    main()
