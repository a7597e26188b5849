"""The bottleneck environment: shapes, a registered id, humans that merge in the environment
(the task's lane changes reach the step), rewards differentiable in the AVs' actions."""

from __future__ import annotations

import gymnasium
import pytest
import torch

from difftraffic.scenarios.bottleneck import BottleneckTask
from difftraffic.scenarios.bottleneck_env import BottleneckEnv


def _follow(env: BottleneckEnv) -> torch.Tensor:
    """AV actions of a simple car follower: brake when the car ahead is near, else speed up."""
    gap, lead_speed = env.task.ahead_in_through_lane(env.state)
    own = env.state.v[:, env.task.av_slots]
    wish = (gap - 2.0 - 1.5 * own) / 10.0 + (lead_speed - own) / 5.0
    return wish.clamp(-1.0, 1.0)


def test_humans_merge_and_the_platoon_passes_the_drop_without_collisions():
    env = BottleneckEnv(2, seed=0, dtype=torch.float64)
    obs, _ = env.reset()
    assert obs.shape == (2, env.task.obs_dim) and bool(torch.isfinite(obs).all())
    assert env.lane_changes is not None
    road = env.task.road
    for _ in range(500):
        obs, reward, terminated, truncated, info = env.step(_follow(env))
        assert not bool(terminated.any())
    state = env.state
    assert bool((road.nearest_lane(state.y) == 0).all())  # everyone merged into lane 0
    assert float(obs[:, -1].min()) > 0.5  # most of the platoon is past the drop
    assert bool(((reward > 0) & (reward < 1)).all())


def test_the_reward_is_differentiable_in_the_actions():
    env = BottleneckEnv(1, seed=0, dtype=torch.float64)
    env.reset()
    action = torch.zeros(1, 2, requires_grad=True)
    env.step(action)
    total = torch.zeros(1, dtype=torch.float64)
    for _ in range(20):
        _, reward, _, _, _ = env.step(torch.zeros(1, 2))
        total = total + reward
    (grad,) = torch.autograd.grad(total.sum(), action)
    assert bool(torch.isfinite(grad).all()) and bool((grad > 0).all())  # faster AVs, faster flow


def test_registered_single_world_env_steps_with_numpy():
    env = gymnasium.make("difftraffic/Bottleneck-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (9,) and env.action_space.shape == (2,)
    obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert obs.dtype.name == "float32" and isinstance(reward, float)


def test_bad_task_settings_fail_clearly():
    with pytest.raises(ValueError, match="autonomous must be an integer >= 1"):
        BottleneckTask(autonomous=0)
    with pytest.raises(ValueError, match="must start before drop_at"):
        BottleneckTask(humans_per_lane=30)
