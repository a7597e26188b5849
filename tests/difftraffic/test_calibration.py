"""Calibration: trajectories from the simulator itself are replayed exactly and their drivers'
parameters recovered; bad files fail with one line naming the row or column."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from difftraffic import Driver, KraussDriver, Road, ScenarioBuilder, step
from difftraffic.calibration import (
    DEFAULT_SCHEDULE,
    Stage,
    calibrate,
    parse_schedule,
    read_trajectories,
    replay,
    windows,
    write_trajectories,
)
from difftraffic.cli import main
from difftraffic.idm import IDMParams

DT = 0.1
STEPS = 500
DRIVERS = [  # v0, T, a, b, s0 of the three followers
    (33.0, 1.2, 1.5, 2.0, 2.0),
    (30.0, 0.8, 2.5, 3.0, 1.5),
    (36.0, 1.6, 1.0, 1.5, 3.0),
]
KRAUSS_DRIVERS = [  # v0, T, a, b, s0: desired speeds below the lead car's top speed (25 m/s)
    (18.0, 1.2, 1.5, 3.0, 2.0),
    (20.0, 0.8, 2.5, 4.0, 1.5),
    (22.0, 1.6, 1.0, 2.5, 3.0),
]
NAMES = ("v0", "T", "a", "b", "s0")


def _lead_acceleration(k: int) -> float:
    """Stop-and-go: the lead car speeds up, brakes to a stop, waits, speeds up again."""
    t = k * DT
    return 1.5 if t < 10 else -3.0 if t < 19 else 0.0 if t < 30 else 2.0


def _simulated_platoon(
    path: Path, drivers: list[tuple[float, ...]] = DRIVERS, kind: type = Driver
) -> None:
    """An autonomous lead car and three followers (``kind``: :class:`Driver` for the IDM,
    :class:`KraussDriver`) in one lane, simulated by ``step``, written as a trajectory CSV."""
    builder = ScenarioBuilder(Road.straight(num_lanes=1, speed_limit=40.0), dt=DT)
    builder = builder.vehicle(lane=0, x=200.0, speed=10.0, autonomous=True)
    for k, values in enumerate(drivers):
        driver = kind(**dict(zip(NAMES, values, strict=True)))
        builder = builder.vehicle(lane=0, x=170.0 - 30.0 * k, speed=10.0, driver=driver)
    scenario = builder.build()
    state, drivers = scenario.sample(batch_size=1, seed=0, dtype=torch.float64)
    states = [state]
    for k in range(STEPS - 1):
        acceleration = torch.where(state.is_av, _lead_acceleration(k), 0.0).double()
        state = step(state, scenario.road, drivers, DT, av_acceleration=acceleration).state
        states.append(state)
    names = ["lead", *(f"car{slot}" for slot in range(1, len(DRIVERS) + 1))]
    write_trajectories(path, states, scenario.road, DT, vehicle_ids=names)


@pytest.fixture(scope="module")
def platoon_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calibration") / "platoon.csv"
    _simulated_platoon(path)
    return path


def _true_params(vehicle_ids: list[str]) -> IDMParams:
    order = [int(v.removeprefix("car")) - 1 for v in vehicle_ids]  # slot 0 is the lead car
    columns = {
        n: torch.tensor([DRIVERS[i][j] for i in order], dtype=torch.float64)
        for j, n in enumerate(NAMES)
    }
    return IDMParams(**columns)


def test_each_follower_is_paired_with_the_car_ahead(platoon_csv: Path) -> None:
    data = read_trajectories(platoon_csv)
    assert data.vehicle_ids == ["car1", "car2", "car3"]
    assert data.leader_ids == ["lead", "car1", "car2"]
    assert data.dt == pytest.approx(DT)
    assert data.position.shape == (3, STEPS) and bool(data.valid.all())


def test_replay_with_the_true_parameters_reproduces_the_simulator(platoon_csv: Path) -> None:
    data = read_trajectories(platoon_csv)
    gap, speed = replay(data, _true_params(data.vehicle_ids))
    assert float(data.speed[0].min()) < 1.0  # the platoon really stops
    assert torch.allclose(gap, data.gap, atol=1e-8)
    assert torch.allclose(speed, data.speed, atol=1e-8)
    wrong = _true_params(data.vehicle_ids)
    shifted = IDMParams(wrong.v0, wrong.T * 1.1, wrong.a, wrong.b, wrong.delta, wrong.s0)
    assert float((replay(data, shifted)[0] - data.gap).abs().max()) > 0.1


def test_calibration_recovers_every_driver_within_two_percent(platoon_csv: Path) -> None:
    data = read_trajectories(platoon_csv)
    # clean data: the first stage of the default schedule already lands on the truth
    result = calibrate(data, schedule=DEFAULT_SCHEDULE[:1], progress=False)
    truth = _true_params(data.vehicle_ids)
    for name in NAMES:  # the stop-and-go lead car excites every parameter
        relative = (result.params[name] - getattr(truth, name)).abs() / getattr(truth, name)
        assert float(relative.max()) < 0.02, (name, result.params[name])
    assert float(result.gap_rmse.max()) < 0.05
    assert result.iterations == 600 and not result.stopped_early


def test_krauss_calibration_recovers_what_the_data_identifies(tmp_path: Path) -> None:
    """Krauss drivers: headway, acceleration, deceleration and minimum gap of every driver come
    back within 2 %. The desired speed only of the first follower: the others never reach theirs
    (each is held below it by the slower driver ahead), and a Krauss driver's v0 acts only as a
    cap, so their replay is exact whatever v0 above their top speed."""
    path = tmp_path / "krauss.csv"
    _simulated_platoon(path, KRAUSS_DRIVERS, KraussDriver)
    data = read_trajectories(path)
    result = calibrate(data, model="krauss", schedule=DEFAULT_SCHEDULE[:1], progress=False)
    order = [int(v.removeprefix("car")) - 1 for v in data.vehicle_ids]
    for j, name in enumerate(NAMES):
        truth = torch.tensor([KRAUSS_DRIVERS[i][j] for i in order], dtype=torch.float64)
        relative = (result.params[name] - truth).abs() / truth
        identified = relative[:1] if name == "v0" else relative
        assert float(identified.max()) < 0.02, (name, result.params[name])
    top_speeds = data.speed.max(-1).values
    assert (result.params["v0"][1:] > top_speeds[1:]).all()
    assert float(result.gap_rmse.max()) < 0.05


@pytest.mark.parametrize("model", ["idm", "krauss"])
def test_the_command_writes_parameters_and_errors(
    platoon_csv: Path, tmp_path: Path, model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fitted.json"
    schedule = ["--schedule", "20:5:0.1,all:2:0.01"]
    main(["calibrate", str(platoon_csv), "--model", model, "--out", str(out), *schedule])
    assert f"fitted 3 {model} drivers" in capsys.readouterr().out
    rows = __import__("json").loads(out.read_text())
    assert [r["vehicle_id"] for r in rows] == ["car1", "car2", "car3"]
    assert set(rows[0]) == {"vehicle_id", "leader_id", *NAMES, "gap_rmse", "speed_rmse", "steps"}
    assert all(math.isfinite(r["gap_rmse"]) for r in rows)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("time,vehicle_id,position,speed\n0,a,0,1\n", r"missing column\(s\) \['lane'\]"),
        (
            "time,vehicle_id,lane,position,speed\n0,a,0,nan,1\n0,b,0,10,1\n",
            r"row 2: position='nan' is not finite",
        ),
        (
            "time,vehicle_id,lane,position,speed\n0,a,0,0,1\n0,b,0,x,1\n",
            r"row 3: position='x' is not a number",
        ),
        (
            "time,vehicle_id,lane,position,speed\n0,a,0,0,1\n1,a,0,1,1\n0.5,a,0,2,1\n",
            r"row 4: time 0.5 of vehicle 'a' does not increase",
        ),
        ("time,vehicle_id,lane,position,speed\n0,a,0,0,1\n1,a,0,1,1\n", r"1 vehicle\(s\)"),
        (
            "time,vehicle_id,lane,position,speed\n0,a,0,0,1\n0,b,0,9,1\n1,a,0,1,1\n1,b,0,9,1\n3,a,0,2,1\n3,b,0,9,1\n",
            "one fixed interval",
        ),
        (
            "time,vehicle_id,lane,position,speed\n0,a,0,0,1\n0,b,1,9,1\n1,a,0,1,1\n1,b,1,9,1\n",
            "no vehicle follows one leader",
        ),
    ],
)
def test_a_bad_file_is_one_clear_error(
    tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "bad.csv", content)
    with pytest.raises(ValueError, match=message):
        read_trajectories(path)
    with pytest.raises(SystemExit) as exited:
        main(["calibrate", str(path), "--quiet"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"difftraffic: error: {path}") and error.count("\n") == 1


def test_write_trajectories_names_what_is_wrong(tmp_path: Path) -> None:
    road = Road.straight(num_lanes=1)
    state, _ = ScenarioBuilder(road).platoon(lane=0, count=2).build().sample(batch_size=1)
    with pytest.raises(ValueError, match="states is empty"):
        write_trajectories(tmp_path / "t.csv", [], road, 0.1)
    with pytest.raises(ValueError, match="world=1 is invalid; valid range: 0..0"):
        write_trajectories(tmp_path / "t.csv", [state], road, 0.1, world=1)
    with pytest.raises(ValueError, match="vehicle_ids has 1 names for 2 vehicles"):
        write_trajectories(tmp_path / "t.csv", [state], road, 0.1, vehicle_ids=["a"])


def test_a_time_limit_stops_the_fit_and_says_so(platoon_csv: Path) -> None:
    data = read_trajectories(platoon_csv)
    result = calibrate(data, time_limit=0.0, progress=False)
    assert result.iterations == 1 and result.stopped_early
    assert torch.isfinite(result.gap_rmse).all()


def test_a_bad_schedule_names_the_stage(platoon_csv: Path) -> None:
    with pytest.raises(ValueError, match=r"schedule stage '20:600' must look like"):
        parse_schedule("20:600:0.1,20:600")
    assert parse_schedule("20:600:0.1,all:10:0.01") == (Stage(20, 600, 0.1), Stage(None, 10, 0.01))
    data = read_trajectories(platoon_csv)
    with pytest.raises(ValueError, match=r"Stage\(window=20, iterations=0.*iterations >= 1"):
        calibrate(data, schedule=(Stage(20, 0, 0.1),))


def test_followers_observed_for_fewer_steps_still_fit(platoon_csv: Path) -> None:
    # one follower's stretch ends early: its padded steps are not observed, also in the windows
    # (a length that does not divide the trajectory), and its loss stays finite
    data = read_trajectories(platoon_csv)
    valid = data.valid.clone()
    valid[0, -105:] = False
    data = dataclasses.replace(data, valid=valid)
    assert int(windows(data, 7).valid.sum()) == int(valid.sum())
    result = calibrate(data, schedule=(Stage(20, 3, 0.1),), progress=False)
    assert max(result.history) < 1e6  # a NaN loss would be scrubbed to 1e12
    assert int(result.steps[0]) == STEPS - 105
