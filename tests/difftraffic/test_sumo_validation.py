"""difftraffic's IDM against SUMO's: a platoon behind a stop-and-go leader, 60 s at dt = 0.1 s.

The trajectories were recorded once with ``benchmarks/validate_sumo.py`` (SUMO's ``IDM`` car
following model, one IDM iteration per step, default semi-implicit Euler update); SUMO is not
needed to run this test. The leader's recorded positions and speeds are imposed at every step; the
followers evolve freely from their recorded initial state.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from difftraffic.dynamics import step
from difftraffic.idm import IDMParams
from difftraffic.road import Road

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def recording() -> tuple[dict, torch.Tensor, torch.Tensor]:
    meta = json.loads((DATA / "sumo_idm_stop_and_go.json").read_text())
    with (DATA / "sumo_idm_stop_and_go.csv").open() as handle:
        rows = [[float(value) for value in row] for row in list(csv.reader(handle))[1:]]
    table = torch.tensor(rows, dtype=torch.float64)
    return meta, table[:, 1::2], table[:, 2::2]  # x, v: [steps + 1, vehicles]


def test_recording_is_a_minute_of_stop_and_go(recording) -> None:
    meta, x, v = recording
    assert meta["dt"] == 0.1
    assert x.shape[0] - 1 == meta["steps"] and meta["steps"] * meta["dt"] >= 60.0
    # The leader stops (twice) and the followers come nearly to rest: real stop-and-go.
    assert (v[:, 0] == 0.0).sum() >= 20
    assert v[:, 1:].min() < 1.0
    assert v[:, 1:].max() > 9.0


def replay(make_state, meta, x_sumo, v_sumo, idm: IDMParams) -> tuple[float, float]:
    """Max |position| (m) and |speed| (m/s) error of the followers against SUMO."""
    n = x_sumo.shape[1]
    road = Road.straight(num_lanes=1, speed_limit=meta["idm"]["v0"])
    state = make_state(x_sumo[0], [2.0] * n, v_sumo[0], length=meta["length"])
    x_sim, v_sim = [x_sumo[0]], [v_sumo[0]]
    for k in range(meta["steps"]):
        imposed_x, imposed_v = state.x.clone(), state.v.clone()
        imposed_x[0, 0], imposed_v[0, 0] = x_sumo[k, 0], v_sumo[k, 0]
        state = step(state.replace(x=imposed_x, v=imposed_v), road, idm, meta["dt"]).state
        x_sim.append(state.x[0])
        v_sim.append(state.v[0])
    followers = slice(1, n)
    x_error = (torch.stack(x_sim)[:, followers] - x_sumo[:, followers]).abs().max().item()
    v_error = (torch.stack(v_sim)[:, followers] - v_sumo[:, followers]).abs().max().item()
    return x_error, v_error


def test_followers_match_sumo_within_a_millimetre(make_state, recording) -> None:
    meta, x_sumo, v_sumo = recording
    x_error, v_error = replay(make_state, meta, x_sumo, v_sumo, IDMParams(**meta["idm"]))
    print(f"max follower error vs SUMO: position {x_error:.2e} m, speed {v_error:.2e} m/s")
    assert x_error < 1e-3
    assert v_error < 1e-3


@pytest.mark.parametrize(("name", "factor"), [("T", 1.01), ("a", 1.01), ("delta", 1.05)])
def test_comparison_detects_a_one_percent_parameter_change(make_state, recording, name, factor):
    """The 1e-3 m agreement is not slack: a slightly different driver misses it by far."""
    meta, x_sumo, v_sumo = recording
    changed = dict(meta["idm"], **{name: meta["idm"][name] * factor})
    x_error, _ = replay(make_state, meta, x_sumo, v_sumo, IDMParams(**changed))
    assert x_error > 1e-2
