"""Calibration: trajectories from the simulator itself are replayed exactly and their drivers'
parameters recovered; bad files fail with one line naming the row or column."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from difftraffic import Driver, KraussDriver, Road, ScenarioBuilder, step
from difftraffic.calibration import (
    DEFAULT_SCHEDULE,
    DERIVATIVES,
    Stage,
    _Fit,
    _nielsen_damping,
    _single_precision,
    calibrate,
    parse_schedule,
    read_trajectories,
    replay,
    search_bounds,
    windows,
    write_trajectories,
)
from difftraffic.car_following import model_class
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
    result = calibrate(data, progress=False)
    truth = _true_params(data.vehicle_ids)
    for name in NAMES:  # the stop-and-go lead car excites every parameter
        relative = (result.params[name] - getattr(truth, name)).abs() / getattr(truth, name)
        assert float(relative.max()) < 1e-3, (name, result.params[name])
    assert float(result.gap_rmse.max()) < 1e-4
    # Levenberg-Marquardt converges: the whole-replay stage stops before its last iteration
    assert result.iterations < sum(stage.iterations for stage in DEFAULT_SCHEDULE)
    assert not result.stopped_early


def _noisy_copy(source: Path, target: Path, seed: int = 0) -> Path:
    """The trajectories of ``source`` with 0.3 m of position and 0.2 m/s of speed noise."""
    generator = torch.Generator().manual_seed(seed)
    lines = source.read_text().splitlines()
    rows = [lines[0]]
    for line in lines[1:]:
        time, vehicle, lane, position, speed = line.split(",")
        noise = torch.randn(2, generator=generator, dtype=torch.float64).tolist()
        noisy_speed = max(0.0, float(speed) + 0.2 * noise[1])
        rows.append(f"{time},{vehicle},{lane},{float(position) + 0.3 * noise[0]},{noisy_speed}")
    target.write_text("\n".join(rows) + "\n")
    return target


def test_on_noisy_data_every_driver_fits_as_well_as_its_true_parameters(
    platoon_csv: Path, tmp_path: Path
) -> None:
    """Issue 15's target: each driver's gap RMSE within 10 % of the true parameters' on the same
    noisy data (fitting the noise can make it lower)."""
    data = read_trajectories(_noisy_copy(platoon_csv, tmp_path / "noisy.csv"))
    result = calibrate(data, progress=False)
    true_gap, _ = replay(data, _true_params(data.vehicle_ids))
    true_rmse = (((true_gap - data.gap) ** 2).mean(-1)).sqrt()
    assert float(true_rmse.min()) > 0.2  # the noise is there
    assert (result.gap_rmse <= 1.1 * true_rmse).all(), (result.gap_rmse, true_rmse)
    # the trace of the whole-replay stage: times in order, errors never rising, ending at the
    # fitted parameters' gap MSE
    seconds = [t for t, _ in result.trace]
    errors = torch.stack([e for _, e in result.trace])
    assert len(seconds) >= 2 and seconds == sorted(seconds) and seconds[0] > 0
    assert (errors[1:] <= errors[:-1]).all()
    torch.testing.assert_close(errors[-1], result.gap_rmse**2)


def test_the_jacobian_by_differences_agrees_with_autodiff(platoon_csv: Path) -> None:
    """Both ways of computing the Jacobian of the replay residuals, at a point away from the
    truth, on windows and on the whole replay, for both models."""
    data = read_trajectories(platoon_csv)
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for model in ("idm", "krauss"):
        fits = {
            way: _Fit(data, model_class(model), "both", search_bounds(model), way, None)
            for way in DERIVATIVES
        }
        for fit_data in (data, windows(data, 50)):
            residual, by_differences = fits["differences"].jacobian(fit_data, logits)
            exact_residual, exact = fits["autodiff"].jacobian(fit_data, logits)
            assert torch.equal(residual, exact_residual)
            scale = exact.abs().amax((-2, -1), keepdim=True)
            assert float(((by_differences - exact).abs() / scale).max()) < 1e-5, model
            assert float(exact.abs().max()) > 1.0  # the replay does depend on the parameters


def test_the_damping_follows_the_gain_ratio_and_grows_faster_on_each_rejection() -> None:
    """Nielsen's rule: a kept step predicted exactly divides the damping by 3, one that gained
    half what was predicted leaves it, one that gained more than predicted never shrinks it by
    more than 3; rejections multiply it by 2, 4, 8... and a kept step resets that."""
    damping = torch.ones(3, dtype=torch.float64)
    kept = torch.tensor([True, True, True])
    shrunk, growth = _nielsen_damping(
        damping,
        torch.full_like(damping, 8.0),
        torch.tensor([1.0, 0.5, 5.0], dtype=torch.float64),
        kept,
    )
    assert torch.allclose(shrunk, torch.tensor([1 / 3, 1.0, 1 / 3], dtype=torch.float64))
    assert torch.equal(growth, torch.full_like(damping, 2.0))
    rejected = ~kept
    grown = [damping]
    growth = torch.full_like(damping, 2.0)
    for _ in range(3):
        damping, growth = _nielsen_damping(damping, growth, torch.zeros_like(damping), rejected)
        grown.append(damping)
    ratios = [float((after / before)[0]) for before, after in zip(grown, grown[1:], strict=False)]
    assert ratios == [2.0, 4.0, 8.0]


def test_single_precision_windows_replay_as_in_double(platoon_csv: Path) -> None:
    """Positions measured from each window's start keep float32 replays within a millimetre of
    float64 ones (kilometre positions in float32 would not), and the fit's parameters come back
    in the data's precision."""
    data = read_trajectories(platoon_csv)
    far = dataclasses.replace(
        data, position=data.position + 5000.0, leader_position=data.leader_position + 5000.0
    )
    double = windows(far, 100)
    truth = _true_params(data.vehicle_ids)
    per_window = {n: getattr(truth, n)[:, None] for n in NAMES}
    in_single = IDMParams(**{n: value.float() for n, value in per_window.items()})
    reference_gap, reference_speed = replay(double, IDMParams(**per_window))
    gap, speed = replay(_single_precision(double), in_single)
    assert gap.dtype == torch.float32
    assert float((gap - reference_gap).abs().max()) < 1e-3
    assert float((speed - reference_speed).abs().max()) < 1e-3
    series = ("position", "speed", "leader_position", "leader_speed")
    cast = dataclasses.replace(double, **{n: getattr(double, n).float() for n in series})
    assert float((replay(cast, in_single)[0] - reference_gap).abs().max()) > 1e-3
    result = calibrate(data, schedule=(Stage(100, 2, single=True),), progress=False)
    assert result.params["T"].dtype == torch.float64


def test_the_same_seed_gives_the_same_fit(platoon_csv: Path) -> None:
    data = read_trajectories(platoon_csv)
    schedule = (Stage(20, 2),)
    first, again = (calibrate(data, schedule=schedule, seed=3, progress=False) for _ in range(2))
    other = calibrate(data, schedule=schedule, seed=4, progress=False)
    assert all(torch.equal(first.params[n], again.params[n]) for n in NAMES)
    assert not torch.equal(first.params["T"], other.params["T"])


def test_krauss_calibration_recovers_what_the_data_identifies(tmp_path: Path) -> None:
    """Krauss drivers: headway, acceleration, deceleration and minimum gap of every driver come
    back within 2 %. The desired speed only of the first follower: the others never reach theirs
    (each is held below it by the slower driver ahead), and a Krauss driver's v0 acts only as a
    cap, so their replay is exact whatever v0 above their top speed."""
    path = tmp_path / "krauss.csv"
    _simulated_platoon(path, KRAUSS_DRIVERS, KraussDriver)
    data = read_trajectories(path)
    result = calibrate(data, model="krauss", progress=False)
    order = [int(v.removeprefix("car")) - 1 for v in data.vehicle_ids]
    for j, name in enumerate(NAMES):
        truth = torch.tensor([KRAUSS_DRIVERS[i][j] for i in order], dtype=torch.float64)
        relative = (result.params[name] - truth).abs() / truth
        identified = relative[:1] if name == "v0" else relative
        assert float(identified.max()) < 0.02, (name, result.params[name])
    # the others' v0 comes back at the lowest cap that replays the same: their top speed
    top_speeds = torch.where(data.valid, data.speed, 0.0).amax(-1)
    assert torch.allclose(result.params["v0"][1:], top_speeds[1:], atol=0.05)
    assert float(result.gap_rmse.max()) < 0.05


def test_a_speed_cap_that_never_binds_is_lowered_to_the_fastest_replayed_speed(
    tmp_path: Path,
) -> None:
    """Krauss's v0 only caps the next speed, so the error is flat in it wherever the cap never
    binds and no derivative points back. The fit moves such a cap to its edge, the fastest
    replayed speed: the replay is the same, and a cap that binds is left where it is."""
    path = tmp_path / "krauss.csv"
    _simulated_platoon(path, KRAUSS_DRIVERS, KraussDriver)
    data = read_trajectories(path)
    order = [int(v.removeprefix("car")) - 1 for v in data.vehicle_ids]
    truth = {
        name: torch.tensor([KRAUSS_DRIVERS[i][j] for i in order], dtype=torch.float64)
        for j, name in enumerate(NAMES)
    }
    # the first follower reaches its v0 (18 m/s); 60 m/s caps nobody
    params = {**truth, "v0": torch.tensor([truth["v0"][0], 60.0, 60.0], dtype=torch.float64)}
    fit = _Fit(data, model_class("krauss"), "gap", search_bounds("krauss"), "differences", None)
    fractions = torch.stack(
        [(params[n] - fit.lower[i]) / fit.span[i] for i, n in enumerate(NAMES)], -1
    )
    logits = torch.logit(fractions)[None]
    tightened = fit.parameters(fit.tighten_speed_cap(logits))
    before, _ = replay(data, model_class("krauss")(**params))
    after, after_speed = replay(
        data, model_class("krauss")(**{n: v[0] for n, v in tightened.items()})
    )
    fastest = torch.where(data.valid, after_speed, 0.0).amax(-1)
    assert float((after - before).abs().max()) < 1e-9
    assert float(tightened["v0"][0, 0]) == pytest.approx(float(truth["v0"][0]), rel=1e-12)
    assert torch.allclose(tightened["v0"][0, 1:], fastest[1:], rtol=1e-12)
    assert (fastest[1:] < 30.0).all()
    for name in ("T", "a", "b", "s0"):
        assert torch.allclose(tightened[name][0], params[name], rtol=1e-12)
    idm = _Fit(data, model_class("idm"), "gap", search_bounds("idm"), "differences", None)
    assert torch.equal(idm.tighten_speed_cap(logits), logits)


def _drawn_krauss_platoon(path: Path, drivers: int = 12, seed: int = 1) -> dict[str, Tensor]:
    """``drivers`` Krauss followers drawn from realistic ranges (b shared: 4.5 m/s^2) behind a
    lead car that slows to a stop, waits, speeds up to 30 m/s and brakes hard (the platoons of
    ``benchmarks/calibration.py``), written as a trajectory CSV; returns the true parameters
    ``{name: [drivers]}`` in the order of the file's followers."""
    generator = torch.Generator().manual_seed(seed)
    ranges = {"v0": (24.0, 34.0), "T": (0.8, 1.8), "a": (1.0, 2.5), "b": (4.5, 4.5)}
    truth = {
        n: low + (high - low) * torch.rand(drivers, generator=generator, dtype=torch.float64)
        for n, (low, high) in {**ranges, "s0": (1.5, 3.0)}.items()
    }
    builder = ScenarioBuilder(Road.straight(num_lanes=1, speed_limit=40.0), dt=DT)
    builder = builder.vehicle(lane=0, x=600.0, speed=10.0, autonomous=True)
    x = 600.0
    for d in range(drivers):
        x -= 5.0 + 15.0 + 15.0 * float(torch.rand((), generator=generator))
        v0, T, a, b, s0 = (float(truth[n][d]) for n in NAMES)
        driver = KraussDriver(v0=v0, T=T, a=a, b=b, s0=s0)
        builder = builder.vehicle(lane=0, x=x, speed=10.0, driver=driver)
    scenario = builder.build()
    state, models = scenario.sample(batch_size=1, seed=0, dtype=torch.float64)
    times = [0, 5, 11, 16, 28, 40, 46, 50, 60]  # s
    speeds = [10, 10, 0, 0, 30, 30, 6, 6, 16]  # m/s
    states = [state]
    for k in range(600 - 1):
        target = float(np.interp((k + 1) * DT, times, speeds))
        acceleration = torch.where(state.is_av, (target - state.v) / DT, 0.0)
        state = step(state, scenario.road, models, DT, av_acceleration=acceleration).state
        states.append(state)
    names = [f"car{slot}" for slot in range(drivers + 1)]
    write_trajectories(path, states, scenario.road, DT, vehicle_ids=names)
    order = [int(v.removeprefix("car")) - 1 for v in read_trajectories(path).vehicle_ids]
    return {n: truth[n][order] for n in NAMES}


def test_krauss_defaults_escape_the_local_minima_of_a_realistic_platoon(tmp_path: Path) -> None:
    """Krauss's error surface has kinks and plateaus: with the model's default starts every
    parameter that moves the replayed gap by more than 1 cm when changed by 2 % comes back
    within 2 % for all 12 drivers (16 starts left drivers of this platoon stuck)."""
    path = tmp_path / "krauss_platoon.csv"
    truth = _drawn_krauss_platoon(path)
    data = read_trajectories(path)
    result = calibrate(data, model="krauss", progress=False)
    reference, _ = replay(data, model_class("krauss")(**truth))
    for name in NAMES:
        moved, _ = replay(data, model_class("krauss")(**{**truth, name: truth[name] * 1.02}))
        identified = ((moved - reference) ** 2).mean(-1).sqrt() > 0.01
        relative = ((result.params[name] - truth[name]).abs() / truth[name])[identified]
        assert float(relative.max()) < 0.02, (name, relative)
    assert float(result.gap_rmse.max()) < 0.01


@pytest.mark.parametrize("model", ["idm", "krauss"])
def test_the_command_writes_parameters_and_errors(
    platoon_csv: Path, tmp_path: Path, model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fitted.json"
    schedule = ["--schedule", "20:5,all:2"]
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


def test_bad_options_name_the_stage_or_the_value(platoon_csv: Path) -> None:
    with pytest.raises(ValueError, match=r"schedule stage '20:600:0.1' must look like"):
        parse_schedule("100:20,20:600:0.1")
    assert parse_schedule("100:20,all:10") == (Stage(100, 20), Stage(None, 10))
    assert parse_schedule("100:10:single,all:20") == DEFAULT_SCHEDULE
    with pytest.raises(ValueError, match=r"stage '100:10:double' must look like .*:single"):
        parse_schedule("100:10:double")
    data = read_trajectories(platoon_csv)
    with pytest.raises(
        ValueError, match=r"Stage\(window=20, iterations=0, single=False\).*iterations >= 1"
    ):
        calibrate(data, schedule=(Stage(20, 0),))
    with pytest.raises(ValueError, match=r"derivatives='exact' is invalid; valid values"):
        calibrate(data, derivatives="exact")


def test_followers_observed_for_fewer_steps_still_fit(platoon_csv: Path) -> None:
    # one follower's stretch ends early: its padded steps are not observed, also in the windows
    # (a length that does not divide the trajectory), and its loss stays finite
    data = read_trajectories(platoon_csv)
    valid = data.valid.clone()
    valid[0, -105:] = False
    data = dataclasses.replace(data, valid=valid)
    assert int(windows(data, 7).valid.sum()) == int(valid.sum())
    result = calibrate(data, schedule=(Stage(20, 3),), progress=False)
    assert all(math.isfinite(error) for error in result.history)
    assert int(result.steps[0]) == STEPS - 105
