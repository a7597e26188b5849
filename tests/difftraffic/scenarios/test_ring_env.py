"""Mixed autonomy on the ring: the registered environment, what the AV observes and controls,
the reward, termination on collision, and gradients from rewards into earlier actions."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

import difftraffic  # noqa: F401  (registers the Gymnasium ids)
from difftraffic.scenarios.ring import RingConfig, RingTask
from difftraffic.scenarios.ring_env import RingEnv

DT = RingConfig().dt


def make_env(num_envs: int = 3, **task_kwargs: object) -> RingEnv:
    """Worlds that start evenly spaced (no warm-up), where the mechanics are easy to check."""
    return RingEnv(num_envs, {"warmup_steps": 0, **task_kwargs}, seed=0, dtype=torch.float64)


def test_gymnasium_make_gives_one_seeded_world() -> None:
    env = gymnasium.make("difftraffic/Ring-v0")
    obs, _ = env.reset(seed=3)
    assert obs.shape == (3,) and obs.dtype == np.float32
    assert env.action_space.shape == (1,) and float(env.action_space.high[0]) == 1.0
    again, _ = gymnasium.make("difftraffic/Ring-v0").reset(seed=3)
    assert np.array_equal(obs, again)
    obs, reward, terminated, truncated, _ = env.step(np.array([0.5], dtype=np.float32))
    assert np.isfinite(reward) and not terminated and not truncated


def test_the_av_accelerates_as_told_and_observes_its_leader() -> None:
    env = make_env()
    env.reset()
    before = env.state
    assert before is not None and bool(before.is_av[:, 0].all()) and not before.is_av[:, 1:].any()
    obs, *_ = env.step(torch.tensor([[1.0], [-1.0], [3.0]], dtype=torch.float64))
    state = env.state
    assert state is not None
    # clipped to [-1, 1], scaled by max_acceleration = 1 m/s^2
    expected = before.v[:, 0] + torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64) * DT
    assert torch.allclose(state.v[:, 0], expected)
    ahead = (state.x[:, 1:] - state.x[:, :1]).remainder(230.0)
    gap = ahead.min(-1).values - 4.0
    assert torch.allclose(obs[:, 2] * 230.0, gap)
    assert torch.allclose(obs[:, 0] * 10.0, state.v[:, 0])


def test_the_reward_is_the_mean_speed_less_the_headway_shortfall() -> None:
    task = RingTask(min_time_headway=1.0, min_gap=1.5, headway_penalty=0.1, warmup_steps=0)
    state, _ = task.initial(2, torch.Generator().manual_seed(0), None, torch.float64)
    gap, _ = task.leader(state)
    reward, terminated, _ = task.evaluate(state, torch.zeros_like(state.x, dtype=torch.bool))
    shortfall = torch.relu(1 - gap / (1.5 + state.v[:, 0] * 1.0))
    assert float(shortfall.min()) > 0  # 7 m/s with about 6.5 m gaps: closer than 1 s
    assert torch.allclose(reward, state.v.mean(-1) / 10.0 - 0.1 * shortfall)
    assert not terminated.any()


def test_episodes_start_in_stop_and_go_after_the_warm_up() -> None:
    """By default the AV drives like an average human for 300 s before an episode starts, so
    the waves it is to damp are there; with start_states=0 every reset warms up afresh, drawing
    from the env's generator."""
    task = RingTask(start_states=0)
    state, _ = task.initial(3, torch.Generator().manual_seed(0), None, torch.float64)
    assert bool((state.v.std(-1) > 2.0).all())  # stop-and-go in every world
    calm, _ = RingTask(warmup_steps=0).initial(
        3, torch.Generator().manual_seed(0), None, torch.float64
    )
    assert float(calm.v.std(-1).max()) < 1e-9
    again, _ = task.initial(3, torch.Generator().manual_seed(0), None, torch.float64)
    assert torch.equal(state.x, again.x)


def test_starts_are_drawn_from_worlds_warmed_once_by_their_own_seed() -> None:
    task = RingTask(start_states=16)
    state, drivers = task.initial(40, torch.Generator().manual_seed(0), None, torch.float64)
    starts, start_drivers = task._start_worlds(None, torch.float64)
    assert bool((starts.v.std(-1) > 2.0).all())  # every start world in stop-and-go
    # each drawn world is one of the 16, drivers and all; 40 draws reach most of them
    match = (state.x.unsqueeze(1) == starts.x.unsqueeze(0)).all(-1)  # [40, 16]
    assert bool((match.sum(-1) == 1).all()) and int(match.any(0).sum()) >= 12
    source = match.float().argmax(-1)
    assert torch.equal(drivers.tensors()["T"], start_drivers.tensors()["T"][source])
    # the start worlds depend on start_seed only, so a resumed run draws from the same ones
    other_env_seed, _ = RingTask(start_states=16).initial(
        40, torch.Generator().manual_seed(1), None, torch.float64
    )
    assert bool((other_env_seed.x.unsqueeze(1) == starts.x.unsqueeze(0)).all(-1).any(-1).all())
    reseeded, _ = RingTask(start_states=16, start_seed=1)._start_worlds(None, torch.float64)
    assert not torch.equal(reseeded.x, starts.x)


def test_a_collision_ends_the_episode_with_minus_one() -> None:
    env = make_env(num_envs=1, max_acceleration=30.0)
    env.reset()
    for _ in range(100):
        _, reward, terminated, _, info = env.step(torch.ones(1, 1, dtype=torch.float64))
        if bool(terminated[0]):
            break
    assert bool(terminated[0]) and bool(info["collision"][0]) and float(reward[0]) == -1.0


def test_rewards_backpropagate_into_the_avs_earlier_actions() -> None:
    env = make_env(num_envs=2)
    env.reset()
    actions = torch.full((30, 2, 1), 0.2, dtype=torch.float64, requires_grad=True)
    total = torch.zeros(2, dtype=torch.float64)
    for t in range(30):
        _, reward, terminated, _, _ = env.step(actions[t])
        assert not terminated.any()
        total = total + reward
    total.sum().backward()
    assert actions.grad is not None and torch.isfinite(actions.grad).all()
    # the AV's speed enters the mean speed directly, and its followers' through the IDM
    assert float(actions.grad[:10].abs().min()) > 0


def test_bad_task_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="max_acceleration"):
        RingTask(max_acceleration=0.0)
    with pytest.raises(ValueError, match="max_episode_steps must be an integer >= 1, got 0"):
        RingTask(max_episode_steps=0)
    with pytest.raises(ValueError, match="headway_penalty"):
        RingTask(headway_penalty=-1.0)
    with pytest.raises(ValueError, match="warmup_steps must be an integer >= 0, got -1"):
        RingTask(warmup_steps=-1)
    with pytest.raises(ValueError, match="start_states must be an integer >= 0, got 2.5"):
        RingTask(start_states=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="start_seed='a' must be an integer"):
        RingTask(start_seed="a")  # type: ignore[arg-type]
