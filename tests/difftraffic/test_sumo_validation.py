"""difftraffic's car-following models against SUMO's: platoons behind a leader, 60 s at dt = 0.1 s.

The trajectories were recorded once with ``benchmarks/validate_sumo.py`` (SUMO 1.28's ``IDM`` with
one iteration per step and its default ``Krauss``, semi-implicit Euler update); SUMO is not
needed to run this test. The leader's recorded positions and speeds are imposed at every step; the
followers evolve freely from their recorded initial state.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from difftraffic.car_following import Drivers, MixedDrivers, model_class
from difftraffic.dynamics import StepPath, step
from difftraffic.road import Road

DATA = Path(__file__).parent / "data"
RECORDINGS = ["sumo_idm_stop_and_go", "sumo_krauss_braking", "sumo_mixed"]


def load(name: str) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    meta = json.loads((DATA / f"{name}.json").read_text())
    with (DATA / f"{name}.csv").open() as handle:
        rows = [[float(value) for value in row] for row in list(csv.reader(handle))[1:]]
    table = torch.tensor(rows, dtype=torch.float64)
    return meta, table[:, 1::2], table[:, 2::2]  # x, v: [steps + 1, vehicles]


def drivers_of(followers: list[dict[str, Any]]) -> Drivers:
    """The recorded followers as ``[1, N]`` drivers (the leader's slot 0 is imposed)."""
    kinds = list(dict.fromkeys(f["model"] for f in followers))

    def model(kind: str) -> Any:
        cls = model_class(kind)
        own = [f if f["model"] == kind else None for f in followers]
        first = next(f for f in own if f is not None)
        columns = {
            name: [first[name]] + [(f or first)[name] for f in own]
            for name in cls.PARAMETERS
            if name in first
        }
        return cls(**{k: torch.tensor([v], dtype=torch.float64) for k, v in columns.items()})

    if len(kinds) == 1:
        return model(kinds[0])
    choice = torch.tensor([[0] + [kinds.index(f["model"]) for f in followers]])
    return MixedDrivers(tuple(model(kind) for kind in kinds), choice)


def replay(
    make_state, meta, x_sumo, v_sumo, drivers: Drivers, path: StepPath = "auto", device="cpu"
) -> tuple[float, float]:
    """Max |position| (m) and |speed| (m/s) error of the followers against SUMO, simulated on
    ``device``."""
    n = x_sumo.shape[1]
    road = Road.straight(num_lanes=1, speed_limit=meta["lane_speed"])
    state = make_state(x_sumo[0], [2.0] * n, v_sumo[0], length=meta["length"]).to(device)
    x_sumo, v_sumo, drivers = x_sumo.to(device), v_sumo.to(device), drivers.to(state.x)
    x_sim, v_sim = [x_sumo[0]], [v_sumo[0]]
    for k in range(meta["steps"]):
        imposed_x, imposed_v = state.x.clone(), state.v.clone()
        imposed_x[0, 0], imposed_v[0, 0] = x_sumo[k, 0], v_sumo[k, 0]
        imposed = state.replace(x=imposed_x, v=imposed_v)
        state = step(imposed, road, drivers, meta["dt"], path=path).state
        x_sim.append(state.x[0])
        v_sim.append(state.v[0])
    followers = slice(1, n)
    x_error = (torch.stack(x_sim)[:, followers] - x_sumo[:, followers]).abs().max().item()
    v_error = (torch.stack(v_sim)[:, followers] - v_sumo[:, followers]).abs().max().item()
    return x_error, v_error


def test_recordings_are_a_minute_of_stop_and_go() -> None:
    for name in RECORDINGS:
        meta, x, v = load(name)
        assert meta["dt"] == 0.1
        assert x.shape[0] - 1 == meta["steps"] and meta["steps"] * meta["dt"] >= 60.0
        # The leader stops (twice) and the followers come nearly to rest: real stop-and-go.
        assert (v[:, 0] == 0.0).sum() >= 20
        assert v[:, 1:].min() < 1.0
        assert v[:, 1:].max() > 9.0


def test_krauss_recording_exercises_emergency_braking() -> None:
    """The leader brakes at 10 m/s^2: some Krauss follower must brake beyond its ``b``."""
    meta, _, v = load("sumo_krauss_braking")
    deceleration = -(v[1:, 1:] - v[:-1, 1:]) / meta["dt"]
    comfortable = torch.tensor([f["b"] for f in meta["followers"]], dtype=torch.float64)
    assert (deceleration > comfortable + 0.1).any()


@pytest.mark.parametrize("path", ["eager", "auto"])
@pytest.mark.parametrize("name", RECORDINGS)
def test_followers_match_sumo_within_a_millimetre(make_state, name, path, device):
    """On every path and device: ``auto`` takes the fused step for the IDM platoon, eager for
    the others."""
    meta, x_sumo, v_sumo = load(name)
    drivers = drivers_of(meta["followers"])
    x_error, v_error = replay(make_state, meta, x_sumo, v_sumo, drivers, path, device)
    print(f"{name} ({path}, {device}): max follower error vs SUMO: {x_error:.2e} m, "
          f"{v_error:.2e} m/s")  # fmt: skip
    assert x_error < 1e-3
    assert v_error < 1e-3


@pytest.mark.parametrize(
    ("name", "parameter", "factor"),
    [
        ("sumo_idm_stop_and_go", "T", 1.01),
        ("sumo_idm_stop_and_go", "a", 1.01),
        ("sumo_idm_stop_and_go", "delta", 1.05),
        ("sumo_krauss_braking", "T", 1.01),
        ("sumo_krauss_braking", "a", 1.01),
        ("sumo_krauss_braking", "s0", 1.01),
    ],
)
def test_comparison_detects_a_one_percent_parameter_change(make_state, name, parameter, factor):
    """The 1e-3 m agreement is not slack: a slightly different driver misses it by far."""
    meta, x_sumo, v_sumo = load(name)
    changed = [dict(f, **{parameter: f[parameter] * factor}) for f in meta["followers"]]
    x_error, _ = replay(make_state, meta, x_sumo, v_sumo, drivers_of(changed))
    assert x_error > 1e-2


def test_mixed_platoon_needs_both_models(make_state) -> None:
    """Replaying the mixed platoon with one model for everyone misses SUMO by metres."""
    meta, x_sumo, v_sumo = load("sumo_mixed")
    for kind in ("idm", "krauss"):
        template = next(f for f in meta["followers"] if f["model"] == kind)
        same = [dict(template, v0=f["v0"]) for f in meta["followers"]]
        x_error, _ = replay(make_state, meta, x_sumo, v_sumo, drivers_of(same))
        assert x_error > 0.1, kind
