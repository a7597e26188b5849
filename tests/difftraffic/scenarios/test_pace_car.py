"""The pace-car scenarios: layout, reward, each termination condition, observation layout."""

import math

import pytest
import torch

from difftraffic import PACE_CAR_VARIANTS, PaceCarEnv, PaceCarTask, pace_car_config, step
from difftraffic.neighbors import compute_neighbors, detect_collisions


def initial(variant="2lane", batch_size=8, seed=0, **overrides):
    task = PaceCarTask(pace_car_config(variant, **overrides))
    generator = torch.Generator().manual_seed(seed)
    state, idm = task.initial(batch_size, generator, "cpu", torch.float64)
    return task, state, idm


@pytest.mark.parametrize(("variant", "lanes_humans"), PACE_CAR_VARIANTS.items())
def test_variants_have_the_papers_lanes_and_humans(variant, lanes_humans):
    lanes, per_lane = lanes_humans
    task, state, _ = initial(variant)
    assert task.road.num_lanes == lanes
    assert state.num_vehicles == 1 + lanes * per_lane
    assert state.is_av[:, 0].all() and not state.is_av[:, 1:].any()
    assert task.obs_dim == 4 * (1 + lanes * per_lane) and task.action_dim == 2


def test_unknown_variant_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown pace-car variant '5lane'.*1lane, 2lane"):
        pace_car_config("5lane")


def test_initial_layout_humans_at_rest_and_pace_car_50m_ahead_in_a_random_lane():
    task, state, idm = initial("4lane", batch_size=256)
    humans_x = state.x[0, 1:].reshape(4, 4)
    expected = torch.tensor([0.0, 10.0, 20.0, 30.0], dtype=torch.float64).expand(4, 4)
    torch.testing.assert_close(humans_x, expected)
    assert (state.v == 0).all()
    torch.testing.assert_close(state.x[:, 0], torch.full((256,), 80.0, dtype=torch.float64))
    pace_lane = task.road.nearest_lane(state.y[:, 0])
    counts = torch.bincount(pace_lane, minlength=4)
    assert (counts > 40).all(), f"pace-car lanes are not spread uniformly: {counts.tolist()}"
    assert (idm.a[:, 1:] == 35.0).all() and (idm.T[:, 1:] == 0.4).all() and (idm.s0 == 1.5).all()


def test_reward_is_one_at_target_speed_and_zero_far_from_it():
    task, state, _ = initial("2lane", batch_size=3)
    speeds = torch.tensor([[10.0] * 4, [0.0] * 4, [10.0, 15.0, 30.0, 5.0]], dtype=torch.float64)
    v = torch.cat([state.v[:, :1], speeds], dim=1)
    reward = task.speed_reward(state.replace(v=v))
    expected_last = 1.0 - (0.0 + 0.5 + 1.0 + 0.5) / 4
    torch.testing.assert_close(reward, torch.tensor([1.0, 0.0, expected_last], dtype=torch.float64))


def reasons_after(task, state):
    collided = torch.zeros_like(state.active)
    return task.termination_reasons(state, collided)


def test_no_termination_at_the_start():
    task, state, _ = initial("4lane")
    reward, terminated, _ = task.evaluate(state, torch.zeros_like(state.active))
    assert not terminated.any()
    assert (reward == 0.0).all()  # humans at rest: every deviation is capped at 1


def test_termination_when_the_pace_car_leaves_the_road():
    task, state, _ = initial("1lane", batch_size=2)
    y = state.y.clone()
    y[0, 0] = task.road.width + 2.01  # more than 2 m beyond the last lane centre... and beyond
    y[1, 0] = 2.0 + 1.99  # still within 2 m of the centre
    reasons = reasons_after(task, state.replace(y=y))
    assert reasons["off_road"].tolist() == [True, False]


def test_termination_when_the_pace_car_is_too_far_from_every_human():
    task, state, _ = initial("2lane", batch_size=2)
    x = state.x.clone()
    x[0, 0] = x[0, 1:].max() + 100.5
    x[1, 0] = x[1, 1:].max() + 99.5
    assert reasons_after(task, state.replace(x=x))["too_far"].tolist() == [True, False]


def test_termination_when_any_human_is_ahead_of_the_pace_car():
    task, state, _ = initial("2lane", batch_size=2)
    x = state.x.clone()
    x[0, 3] = x[0, 0] + 0.1
    assert reasons_after(task, state.replace(x=x))["fell_behind"].tolist() == [True, False]


def test_termination_on_collision_with_a_human_gives_reward_minus_one():
    task, state, _ = initial("2lane", batch_size=2)
    pace_lane = task.road.nearest_lane(state.y[0, 0]).item()
    front_human = 1 + pace_lane * 2 + 1
    x = state.x.clone()
    x[0, front_human] = x[0, 0] - 2.0  # bodies overlap by 3 m in world 0 only
    x[1, 1:] = x[1, 1:] + 40.0  # world 1: humans close behind, no overlap
    moved = state.replace(x=x)
    collided = detect_collisions(moved, compute_neighbors(moved, task.road), task.road)
    reward, terminated, reasons = task.evaluate(moved, collided)
    assert reasons["collision"].tolist() == [True, False]
    assert terminated.tolist() == [True, False]
    assert reward[0].item() == -1.0 and reward[1].item() != -1.0


def test_observation_layout_is_relative_to_the_pace_car():
    task, state, _ = initial("2lane", batch_size=1)
    heading = state.heading.clone()
    heading[0, 0] = 0.1
    v = torch.tensor([[5.0, 1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    state = state.replace(heading=heading, v=v)
    obs = task.observe(state)[0]
    own = obs[:4]
    assert own[0].item() == pytest.approx(state.y[0, 0].item() - 4.0)
    assert own[1].item() == pytest.approx(0.1)
    assert own[2].item() == pytest.approx(5 * math.cos(0.1))
    assert own[3].item() == pytest.approx(5 * math.sin(0.1))
    humans = obs[4:].reshape(4, 4)
    torch.testing.assert_close(humans[:, 0], state.x[0, 1:] - state.x[0, 0])
    torch.testing.assert_close(humans[:, 1], state.y[0, 1:] - state.y[0, 0])
    torch.testing.assert_close(humans[:, 2], v[0, 1:])
    assert (humans[:, 3] == 0).all()


def test_actions_are_clipped_and_scaled_onto_the_pace_car_only():
    task, state, _ = initial("2lane", batch_size=2)
    action = torch.tensor([[0.5, -0.25], [3.0, -7.0]], dtype=torch.float64)
    acceleration, steering = task.controls(state, action)
    assert acceleration[:, 0].tolist() == [4.0, 8.0]
    torch.testing.assert_close(
        steering[:, 0], torch.tensor([-0.25, -1.0], dtype=torch.float64) * math.radians(20)
    )
    assert (acceleration[:, 1:] == 0).all() and (steering[:, 1:] == 0).all()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"dt": 0.0}, r"PaceCarConfig.dt must be in \(0.0, inf\)"),
        ({"num_lanes": 0}, r"PaceCarConfig.num_lanes must be an integer >= 1, got 0"),
        ({"max_steering": 2.0}, r"max_steering must be in \(0, pi/2\) rad, got 2.0"),
        ({"target_speed": float("nan")}, r"PaceCarConfig.target_speed must be finite"),
        (
            {"lane_membership": "centre"},
            r"PaceCarConfig.lane_membership must be one of 'body', 'center', got 'centre'",
        ),
        (
            {"av_kinematics": "highway-env"},
            r"PaceCarConfig.av_kinematics must be one of 'rear_axle', 'highway_env', got "
            r"'highway-env'",
        ),
    ],
)
def test_bad_configuration_is_rejected(override, message):
    with pytest.raises(ValueError, match=message):
        pace_car_config("1lane", **override)


def human_speeds_behind_an_idle_pace_car(pace_car_y, lane_membership, steps=60):
    """Human speeds ``[4]`` (lane 0 rear, front, lane 1 rear, front) and the leaders after
    ``steps`` steps of the 2-lane environment, the pace car held at rest at ``y = pace_car_y``."""
    env = PaceCarEnv(
        "2lane",
        1,
        config_overrides={"lane_membership": lane_membership},
        seed=0,
        dtype=torch.float64,
    )
    env.reset()
    assert env.task.road.lane_membership == lane_membership
    y = env.state.y.clone()
    y[:, 0] = pace_car_y
    env.state = env.state.replace(y=y)
    env.neighbors = compute_neighbors(env.state, env.task.road)
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(torch.zeros(1, 2, dtype=torch.float64))
        assert not (terminated | truncated).any()
    return env.state.v[0, 1:], env.neighbors


def test_pace_car_on_the_lane_boundary_blocks_one_lane_by_centre_and_both_by_body():
    # Centred 0.5 m above the 0/1 boundary: its body overlaps both lanes, its centre is in lane 1.
    by_centre, centre_neighbors = human_speeds_behind_an_idle_pace_car(4.5, "center")
    by_body, body_neighbors = human_speeds_behind_an_idle_pace_car(4.5, "body")
    in_lane_1, _ = human_speeds_behind_an_idle_pace_car(6.0, "body")
    # Lane 0's front human (slot 2) drives freely by centre, as if the pace car were in lane 1
    # only; by body it follows the pace car and is held back.
    assert not centre_neighbors.has_leader[0, 2]
    assert int(body_neighbors.leader[0, 2]) == 0
    assert torch.equal(by_centre, in_lane_1)
    assert by_centre[1] > by_body[1] + 2.0 and by_centre[0] > by_body[0]
    # Lane 1 follows the pace car under both rules.
    assert int(centre_neighbors.leader[0, 4]) == int(body_neighbors.leader[0, 4]) == 0
    assert torch.equal(by_centre[2:], by_body[2:])


def test_the_pace_car_moves_by_the_configured_kinematics():
    """The environment passes the task's ``av_kinematics`` to every step: the same steering
    turns highway-env's pace car (about its centre) less than the default (about its rear axle),
    and the humans' motion is the same under both until the pace car's differs."""
    headings = {}
    for kinematics in ("rear_axle", "highway_env"):
        env = PaceCarEnv(
            "1lane", 1, config_overrides={"av_kinematics": kinematics}, dtype=torch.float64
        )
        assert env.task.av_kinematics == kinematics
        env.reset(seed=0)
        for _ in range(20):
            env.step(torch.tensor([[1.0, 0.0]], dtype=torch.float64))
        state = env.state
        expected = step(
            state,
            env.task.road,
            env.drivers,
            env.task.dt,
            *env.task.controls(state, torch.tensor([[0.0, 0.5]], dtype=torch.float64)),
            av_kinematics=kinematics,
        ).state
        env.step(torch.tensor([[0.0, 0.5]], dtype=torch.float64))
        torch.testing.assert_close(env.state.heading, expected.heading, rtol=0, atol=0)
        headings[kinematics] = env.state.heading[0, 0].item()
    assert headings["rear_axle"] > 1.5 * headings["highway_env"] > 0
