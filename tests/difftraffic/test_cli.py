"""The ``difftraffic`` command: render writes playable videos, simulate prints a summary."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import imageio.v3 as iio
import imageio_ffmpeg
import pytest

from difftraffic.cli import main, make_source

SMALL = ["--width", "192", "--height", "108", "--quiet"]

USER_SCENARIO = textwrap.dedent(
    """
    from difftraffic import MOBIL, Driver, Road, ScenarioBuilder

    def ring():
        return (
            ScenarioBuilder(Road.ring(120.0, num_lanes=2), dt=0.1)
            .platoon(lane=0, count=4, spacing=25.0, speed=6.0)
            .vehicle(lane=1, x=10.0, speed=6.0, autonomous=True)
            .build()
        )

    def overtaking():
        overtaker = Driver(v0=30.0, lane_change=MOBIL(politeness=0.3))
        return (
            ScenarioBuilder(Road.straight(num_lanes=2, speed_limit=30.0), dt=0.1)
            .vehicle(lane=0, x=150.0, speed=10.0, driver=Driver(v0=10.0))
            .platoon(lane=0, count=4, spacing=30.0, speed=25.0, driver=overtaker)
            .build()
        )

    def not_a_scenario():
        return 42
    """
)


@pytest.fixture
def scenario_file(tmp_path):
    path = tmp_path / "my_scenarios.py"
    path.write_text(USER_SCENARIO)
    return path


def test_render_pace_car_writes_a_playable_mp4(tmp_path, capsys) -> None:
    out = tmp_path / "rollout.mp4"
    main(["render", "2lane", "--steps", "6", "--out", str(out), "--policy", "weave", *SMALL])
    frames = list(iio.imiter(out, plugin="FFMPEG"))
    assert len(frames) == 7 and frames[0].shape == (108, 192, 3)
    assert imageio_ffmpeg.count_frames_and_secs(str(out))[0] == 7
    assert str(out) in capsys.readouterr().out


def test_render_user_scenario_file_to_gif(tmp_path, scenario_file) -> None:
    out = tmp_path / "ring.gif"
    spec = f"{scenario_file}:ring"
    main(["render", spec, "--steps", "4", "--out", str(out), "--camera", "road",
          "--policy", "random", "--batch", "3", "--world", "2", *SMALL])  # fmt: skip
    frames = iio.imread(out, index=None)
    assert frames.shape[:3] == (5, 108, 192)


def test_simulate_prints_speeds_collisions_and_throughput(capsys, scenario_file) -> None:
    main(["simulate", "1lane", "--steps", "20", "--batch", "4", "--policy", "random"])
    pace_car = capsys.readouterr().out
    main(["simulate", f"{scenario_file}:ring", "--steps", "20", "--batch", "2"])
    user = capsys.readouterr().out
    for text in (pace_car, user):
        assert "mean human speed" in text and "throughput" in text
    assert "pace-car collisions" in pace_car and "episodes ended" in pace_car
    assert re.search(r"collisions \(vehicle-steps\) +0\n", user)


def test_simulate_moves_a_user_scenario_with_its_drivers_lane_changes(
    capsys, scenario_file
) -> None:
    from difftraffic.cli import load_scenario
    from difftraffic.dynamics import rollout

    main(["simulate", f"{scenario_file}:overtaking", "--steps", "200", "--batch", "2"])
    printed = float(re.search(r"mean human speed +(\S+) m/s", capsys.readouterr().out)[1])
    scenario = load_scenario(f"{scenario_file}:overtaking")
    states, _ = scenario.simulate(200, batch_size=2, seed=0)
    with_changes = sum(float(s.v.mean()) for s in states[1:]) / 200
    assert any(bool((scenario.road.nearest_lane(s.y) == 1).any()) for s in states)
    assert printed == pytest.approx(with_changes, abs=2e-3)
    # without lane changes the platoon stays stuck behind the slow car: a lower mean speed
    state, drivers = scenario.sample(2, seed=0)
    stuck, _ = rollout(state, scenario.road, drivers, scenario.dt, 200)
    without = sum(float(s.v.mean()) for s in stuck[1:]) / 200
    assert without < with_changes - 1.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["render", "1lane", "--policy", "runs/missing"], "no exported policy found"),
        (["simulate", "7lane"], "pace-car variant \\(1lane, 2lane, 3lane, 4lane, 10lane\\)"),
        (["simulate", "missing.py:ring"], "does not exist"),
        (["render", "1lane", "--world", "3", "--batch", "2"], r"world must be .* \[0, 1\]"),
        (["simulate", "1lane", "--lane-membership", "lateral"], r"invalid choice: 'lateral'"),
    ],
)
def test_bad_requests_exit_with_a_clear_message(tmp_path, capsys, argv, message) -> None:
    if argv[0] == "render":
        argv = [*argv, "--out", str(tmp_path / "x.mp4"), "--steps", "1", *SMALL]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_lane_membership_and_kinematics_select_the_pace_car_options(scenario_file, capsys) -> None:
    assert make_source("2lane", 1, 0).task.road.lane_membership == "body"
    assert make_source("2lane", 1, 0, "center").task.road.lane_membership == "center"
    main(["simulate", "2lane", "--steps", "5", "--batch", "2", "--lane-membership", "center"])
    assert "mean human speed" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["simulate", f"{scenario_file}:ring", "--steps", "1", "--lane-membership", "body"])
    assert "--lane-membership applies to pace-car variants" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            ["simulate", f"{scenario_file}:ring", "--steps", "1", "--av-kinematics", "highway_env"]
        )
    assert "--av-kinematics applies to pace-car variants" in capsys.readouterr().err
    assert make_source("2lane", 1, 0, av_kinematics="highway_env").task.av_kinematics == (
        "highway_env"
    )


def test_user_function_must_return_a_scenario(scenario_file, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", f"{scenario_file}:not_a_scenario", "--steps", "1"])
    assert "must return a difftraffic.Scenario" in capsys.readouterr().err


def test_help_lists_every_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "difftraffic.cli", "render", "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for option in ("--steps", "--out", "--seed", "--world", "--policy", "--camera", "--zoom"):
        assert option in result.stdout
    assert "10lane" in result.stdout and "module:function" in result.stdout
