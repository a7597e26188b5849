"""Short-horizon rollouts that keep the autograd graph, GAE, and the action gradient of GAE.

Shapes: ``H`` rollout horizon, ``N`` parallel worlds, ``D`` action size, ``O`` observation size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from difftraffic_rl.envs import VecEnv
from difftraffic_rl.networks import Actor, gaussian_log_prob

__all__ = [
    "EpisodeTracker",
    "Rollout",
    "advantage_action_gradient",
    "collect_rollout",
    "gae",
    "steps_since_episode_start",
]

BLOW_UP_LIMIT = 1e6
"""A final observation with an entry beyond this magnitude (or not finite) is not bootstrapped."""


class EpisodeTracker:
    """Accumulates per-world returns and lengths across rollout windows.

    ``returns, lengths: [N]`` running sums of the unfinished episodes.
    """

    def __init__(self, num_envs: int, device: torch.device, dtype: torch.dtype) -> None:
        self.returns = torch.zeros(num_envs, device=device, dtype=dtype)
        self.lengths = torch.zeros(num_envs, device=device, dtype=torch.long)

    def update(self, reward: torch.Tensor, done: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add one step (``reward [N]``, ``done [N]`` bool); return finished returns and lengths."""
        self.returns += reward.detach()
        self.lengths += 1
        finished = (self.returns[done].clone(), self.lengths[done].clone())
        self.returns[done] = 0
        self.lengths[done] = 0
        return finished

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Running sums, for checkpoints."""
        return {"returns": self.returns.clone(), "lengths": self.lengths.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` wrote."""
        self.returns.copy_(state["returns"])
        self.lengths.copy_(state["lengths"])


@dataclass
class Rollout:
    """One window of experience, time-major.

    Attributes:
        normalized_obs: ``[H, N, O]`` normalized observations fed to the actor (graph-attached to
            earlier actions when the rollout is differentiable).
        action_steps: ``H`` tensors ``[N, D]``: the pre-tanh actions exactly as they entered the
            environment, graph-attached; ``advantage_action_gradient`` differentiates w.r.t. them.
        actions, eps, stds: ``[H, N, D]`` detached actions, noises and stds.
        log_probs: ``[H, N]`` detached ``log pi_old(a | s)``.
        rewards: ``[H, N]``.
        values: ``[H, N]`` target-critic values ``V(s_t)`` (un-normalized).
        next_values: ``[H, N]`` ``V(s_{t+1})`` from the final observation; 0 where the episode
            terminated (not truncated) or the final observation blew up.
        dones: ``[H, N]`` bool, the episode ended at step ``t``.
        episode_starts: ``[H, N]`` bool, step ``t`` is the first of a differentiable trajectory:
            ``t == 0`` (the window cut) or ``dones[t - 1]``.
        next_raw_obs: ``[N, O]`` raw (not normalized) observation after the last step, detached:
            the next window's start.
        episode_returns, episode_lengths: ``[E]`` returns and lengths of the E episodes finished.
        vectorized_backward: the graph supports batched backward passes (the environment's
            ``vectorized_backward``; see :mod:`difftraffic_rl.gradients`).
    """

    normalized_obs: torch.Tensor
    action_steps: list[torch.Tensor]
    actions: torch.Tensor
    eps: torch.Tensor
    stds: torch.Tensor
    log_probs: torch.Tensor
    rewards: torch.Tensor
    values: torch.Tensor
    next_values: torch.Tensor
    dones: torch.Tensor
    episode_starts: torch.Tensor
    next_raw_obs: torch.Tensor
    episode_returns: torch.Tensor
    episode_lengths: torch.Tensor
    vectorized_backward: bool = True

    @property
    def num_samples(self) -> int:
        """``H * N``."""
        return self.rewards.numel()


def collect_rollout(
    env: VecEnv,
    obs: torch.Tensor,
    actor: Actor,
    value_fn: Callable[[torch.Tensor], torch.Tensor],
    normalize_obs: Callable[[torch.Tensor], torch.Tensor],
    observe: Callable[[torch.Tensor], None],
    horizon: int,
    generator: torch.Generator,
    tracker: EpisodeTracker,
    differentiable: bool,
) -> Rollout:
    """Run ``horizon`` steps of ``actor`` in ``env`` from the raw observation ``obs [N, O]``.

    Args:
        value_fn: normalized observation ``[..., O]`` -> un-normalized value ``[...]`` (the target
            critic).
        normalize_obs: raw -> normalized observation with statistics frozen for this window.
        observe: called with every raw observation batch (updates the live statistics).
        generator: source of the action noise ``eps``.
        differentiable: keep the autograd graph through actions, environment and values (RP,
            LR+RP, GI-PPO); otherwise everything runs under ``torch.no_grad``.

    The caller must have called ``env.detach()`` so that the graph starts at this window.
    """
    steps: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("obs", "eps", "mus", "stds", "rewards", "values", "next_values", "dones")
    }
    action_steps: list[torch.Tensor] = []
    finished_returns: list[torch.Tensor] = []
    finished_lengths: list[torch.Tensor] = []
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        for _ in range(horizon):
            observe(obs)
            obs_n = normalize_obs(obs)
            mean, std = actor(obs_n)
            eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            action = mean + std * eps
            value = value_fn(obs_n)
            obs, reward, terminated, truncated, info = env.step(torch.tanh(action))
            final_obs = info["final_obs"]
            valid = torch.isfinite(final_obs).all(-1) & (final_obs.abs() <= BLOW_UP_LIMIT).all(-1)
            safe_final = torch.where(valid[:, None], final_obs, torch.zeros_like(final_obs))
            next_value = torch.where(valid & ~terminated, value_fn(normalize_obs(safe_final)), 0.0)
            done = terminated | truncated
            returns, lengths = tracker.update(reward, done)
            finished_returns.append(returns)
            finished_lengths.append(lengths)
            for key, val in (
                ("obs", obs_n),
                ("eps", eps),
                ("mus", mean.detach()),
                ("stds", std.detach()),
                ("rewards", reward),
                ("values", value),
                ("next_values", next_value),
                ("dones", done),
            ):
                steps[key].append(val)
            action_steps.append(action)
    stacked = {k: torch.stack(v) for k, v in steps.items()}
    dones = stacked["dones"]
    starts = torch.ones_like(dones)
    starts[1:] = dones[:-1]
    actions = torch.stack([a.detach() for a in action_steps])
    return Rollout(
        normalized_obs=stacked["obs"],
        action_steps=action_steps,
        actions=actions,
        eps=stacked["eps"],
        stds=stacked["stds"],
        log_probs=gaussian_log_prob(actions, stacked["mus"], stacked["stds"]),
        rewards=stacked["rewards"],
        values=stacked["values"],
        next_values=stacked["next_values"],
        dones=dones,
        episode_starts=starts,
        next_raw_obs=obs.detach(),
        episode_returns=torch.cat(finished_returns),
        episode_lengths=torch.cat(finished_lengths),
        vectorized_backward=getattr(env, "vectorized_backward", True),
    )


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Generalized advantage estimates (paper Eq. 11), truncated at the window end.

    ``A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}``, ``A_H = 0``, with
    ``delta_t = r_t + gamma * V'_t - V_t``; ``V'_t`` already holds the bootstrap (0 on
    termination). All inputs ``[H, N]``; differentiable if they are. Returns ``[H, N]``.
    """
    decay = gamma * lam * (~dones).to(rewards.dtype)
    deltas = rewards + gamma * next_values - values
    advantages: list[torch.Tensor] = []
    running = torch.zeros_like(deltas[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = deltas[t] + decay[t] * running
        advantages.append(running)
    return torch.stack(advantages[::-1])


def steps_since_episode_start(episode_starts: torch.Tensor) -> torch.Tensor:
    """``[H, N]`` bool starts -> ``[H, N]`` long: ``t - t_start`` of each step's trajectory."""
    counts = torch.zeros(episode_starts.shape, dtype=torch.long, device=episode_starts.device)
    for t in range(1, episode_starts.shape[0]):
        counts[t] = torch.where(episode_starts[t], 0, counts[t - 1] + 1)
    return counts


def advantage_action_gradient(
    advantages: torch.Tensor,
    action_steps: Sequence[torch.Tensor],
    episode_starts: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """``dA_t/da_t`` for every sample from one backward pass (paper Eq. 12).

    Because ``delta_k`` does not depend on ``a_t`` for ``k < t``,
    ``dA_t/da_t = (1 / (gamma lam))^(t - t_start) * dA_{t_start}/da_t``, and summing the advantages
    of all trajectory starts (which do not depend on each other's actions) lets one backward pass
    deliver ``dA_{t_start}/da_t`` for every step at once.

    Args:
        advantages: ``[H, N]`` GAE, graph-attached to ``action_steps``.
        action_steps: ``H`` tensors ``[N, D]``, the actions that entered the environment.
        episode_starts: ``[H, N]`` bool trajectory starts (see :class:`Rollout`).

    Returns:
        ``[H, N, D]`` detached gradients of each advantage w.r.t. its own action.
    """
    start_sum = advantages[episode_starts].sum()
    grads = torch.autograd.grad(start_sum, list(action_steps), allow_unused=True)
    grads_stacked = torch.stack(
        [torch.zeros_like(a) if g is None else g for g, a in zip(grads, action_steps, strict=True)]
    )
    exponent = steps_since_episode_start(episode_starts).to(grads_stacked.dtype)
    scale = (1.0 / (gamma * lam)) ** exponent
    return grads_stacked * scale[..., None]
