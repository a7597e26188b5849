"""Episode returns of any policy on any task of the environment protocol."""

from __future__ import annotations

from collections.abc import Callable

import torch

from difftraffic_rl.envs import VecEnv

Policy = Callable[[torch.Tensor], torch.Tensor]
"""``obs [B, obs_dim] -> action [B, action_dim]`` in ``[-1, 1]``."""


@torch.no_grad()
def episode_returns(env: VecEnv, policy: Policy, seed: int = 0) -> torch.Tensor:
    """Undiscounted return ``[B]`` of the first episode of every world under ``policy``.

    Runs at most ``env.max_episode_steps`` steps; a world's return stops accumulating when its
    episode terminates or is truncated.
    """
    obs = env.reset(seed=seed)
    returns = torch.zeros(env.num_envs, dtype=obs.dtype, device=obs.device)
    running = torch.ones(env.num_envs, dtype=torch.bool, device=obs.device)
    for _ in range(env.max_episode_steps):
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        returns += torch.where(running, reward, 0.0)
        running &= ~(terminated | truncated)
        if not running.any():
            break
    return returns
