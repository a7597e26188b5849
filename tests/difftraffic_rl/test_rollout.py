"""Rollouts, GAE and the one-backward action gradient of GAE (paper Eq. 12)."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from difftraffic_rl.networks import Actor, Critic
from difftraffic_rl.normalization import RunningMeanStd
from difftraffic_rl.rollout import (
    EpisodeTracker,
    advantage_action_gradient,
    collect_rollout,
    gae,
    steps_since_episode_start,
)


class ChainEnv:
    """Toy differentiable chain: ``s' = s + 0.5 a``, reward ``-(s' - 1)^2 + 0.1 s a``.

    World ``j`` has episodes of ``lengths[j]`` steps with an offset so that episodes start
    inside the rollout window; worlds listed in ``terminate`` end by termination, the others by
    truncation. Reset observations are fresh tensors (no gradient to the past).
    """

    def __init__(self, lengths: list[int], offsets: list[int], terminate: list[bool]) -> None:
        self.num_envs, self.obs_dim, self.action_dim = len(lengths), 1, 1
        self.max_episode_steps = max(lengths)
        self.lengths = torch.tensor(lengths)
        self.t = torch.tensor(offsets)
        self.terminate = torch.tensor(terminate)
        self.state = torch.full((self.num_envs, 1), 0.2, dtype=torch.float64)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        return self.state

    def step(self, action: torch.Tensor) -> tuple[Any, ...]:
        nxt = self.state + 0.5 * action
        reward = (-(nxt - 1.0).square() + 0.1 * self.state * action).squeeze(-1)
        self.t = self.t + 1
        done = self.t >= self.lengths
        self.t = torch.where(done, 0, self.t)
        fresh = torch.full_like(nxt, 0.2).detach()
        self.state = torch.where(done[:, None], fresh, nxt)
        terminated, truncated = done & self.terminate, done & ~self.terminate
        return self.state, reward, terminated, truncated, {"final_obs": nxt}

    def detach(self) -> None:
        self.state = self.state.detach()


def _rollout(horizon: int = 7):
    gen = torch.Generator().manual_seed(0)
    env = ChainEnv(lengths=[3, 2, 5, 4], offsets=[1, 0, 2, 3], terminate=[False, True, False, True])
    actor = Actor(1, 1, (8,), gen).double()
    critic = Critic(1, (8,), gen).double()
    rms = RunningMeanStd((1,), dtype=torch.float64)
    rollout = collect_rollout(
        env,
        env.reset(),
        actor,
        value_fn=critic,
        normalize_obs=rms.normalize,
        observe=lambda o: None,
        horizon=horizon,
        generator=gen,
        tracker=EpisodeTracker(4, torch.device("cpu"), torch.float64),
        differentiable=True,
    )
    return rollout


def test_gae_matches_the_explicit_sum_with_episode_cuts() -> None:
    gen = torch.Generator().manual_seed(1)
    h, n, gamma, lam = 6, 3, 0.9, 0.8
    rewards, values, next_values = (
        torch.randn(h, n, generator=gen, dtype=torch.float64) for _ in range(3)
    )
    dones = torch.rand(h, n, generator=gen) < 0.3
    adv = gae(rewards, values, next_values, dones, gamma, lam)
    delta = rewards + gamma * next_values - values
    for j in range(n):
        for t in range(h):
            expected, weight = 0.0, 1.0
            for k in range(t, h):
                expected += weight * delta[k, j].item()
                if dones[k, j]:
                    break
                weight *= gamma * lam
            assert abs(adv[t, j].item() - expected) < 1e-12


def test_rollout_marks_episode_starts_and_zeroes_terminal_bootstrap() -> None:
    rollout = _rollout()
    assert rollout.episode_starts[0].all()
    assert torch.equal(rollout.episode_starts[1:], rollout.dones[:-1])
    assert rollout.dones[:, 1].any() and rollout.episode_starts[1:, 2].any()
    terminated = rollout.dones & torch.tensor([False, True, False, True])
    assert (rollout.next_values[terminated] == 0).all()
    assert (rollout.next_values[~terminated] != 0).all()
    assert steps_since_episode_start(rollout.episode_starts)[0].eq(0).all()


def test_eq12_one_backward_equals_brute_force_per_step_gradients() -> None:
    gamma, lam = 0.97, 0.9
    rollout = _rollout()
    adv = gae(rollout.rewards, rollout.values, rollout.next_values, rollout.dones, gamma, lam)
    brute = torch.stack(
        [
            torch.autograd.grad(adv[t].sum(), rollout.action_steps[t], retain_graph=True)[0]
            for t in range(adv.shape[0])
        ]
    )
    one_pass = advantage_action_gradient(
        adv, rollout.action_steps, rollout.episode_starts, gamma, lam
    )
    assert brute.abs().min() > 0  # every step's advantage really depends on its action
    torch.testing.assert_close(one_pass, brute, rtol=1e-10, atol=1e-12)


def test_eq12_without_the_reweighting_would_differ() -> None:
    """Guards the test above: the (1/(gamma lam))^k factor matters on this chain."""
    gamma, lam = 0.97, 0.9
    rollout = _rollout()
    adv = gae(rollout.rewards, rollout.values, rollout.next_values, rollout.dones, gamma, lam)
    raw = torch.stack(
        torch.autograd.grad(
            adv[rollout.episode_starts].sum(), rollout.action_steps, retain_graph=True
        )
    )
    one_pass = advantage_action_gradient(
        adv, rollout.action_steps, rollout.episode_starts, gamma, lam
    )
    assert not torch.allclose(raw, one_pass)


def test_episode_tracker_reports_finished_returns() -> None:
    tracker = EpisodeTracker(2, torch.device("cpu"), torch.float32)
    tracker.update(torch.tensor([1.0, 2.0]), torch.tensor([False, True]))
    returns, lengths = tracker.update(torch.tensor([3.0, 4.0]), torch.tensor([True, True]))
    assert returns.tolist() == [4.0, 4.0] and lengths.tolist() == [2, 1]


def test_running_mean_std_matches_the_whole_stream() -> None:
    gen = torch.Generator().manual_seed(3)
    data = torch.randn(100, 2, generator=gen, dtype=torch.float64) * 3 + 1
    rms = RunningMeanStd((2,), epsilon=0.0, dtype=torch.float64)
    for chunk in data.split([10, 40, 1, 49]):
        rms.update(chunk)
    torch.testing.assert_close(rms.mean, data.mean(0))
    torch.testing.assert_close(rms.var, data.var(0, unbiased=False))
    x = torch.tensor([[0.5, -2.0]], dtype=torch.float64)
    torch.testing.assert_close(rms.unnormalize(rms.normalize(x)), x)


@settings(max_examples=40, deadline=None)
@given(
    dones=st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=1, max_size=7),
    gamma=st.floats(0.5, 1.0),
    lam=st.floats(0.5, 1.0),
    seed=st.integers(0, 2**16),
)
def test_eq12_property_on_random_episode_boundaries(
    dones: list[list[bool]], gamma: float, lam: float, seed: int
) -> None:
    """On a chain ``s_t = s_{t-1} (reset at episode starts) + a_t`` with rewards, values and
    bootstraps that depend on the state, Eq. 12 equals per-step autograd for any done pattern."""
    done = torch.tensor(dones)
    h, n = done.shape
    gen = torch.Generator().manual_seed(seed)
    actions = [
        torch.randn(n, 1, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(h)
    ]
    state = torch.zeros(n, 1, dtype=torch.float64)
    rewards, values, next_values = [], [], []
    for t in range(h):
        values.append(0.5 * state.squeeze(-1))
        state = state + actions[t]
        rewards.append((-state.square() + 0.3 * actions[t]).squeeze(-1))
        next_values.append(0.2 * state.square().squeeze(-1))
        state = torch.where(done[t][:, None], torch.zeros_like(state), state)
    adv = gae(torch.stack(rewards), torch.stack(values), torch.stack(next_values), done, gamma, lam)
    starts = torch.ones_like(done)
    starts[1:] = done[:-1]
    brute = torch.stack(
        [torch.autograd.grad(adv[t].sum(), actions[t], retain_graph=True)[0] for t in range(h)]
    )
    one_pass = advantage_action_gradient(adv, actions, starts, gamma, lam)
    torch.testing.assert_close(one_pass, brute, rtol=1e-9, atol=1e-10)
