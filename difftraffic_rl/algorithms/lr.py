"""LR: the likelihood-ratio (REINFORCE) policy gradient with GAE advantages (paper 7.4.1).

One Adam step per epoch on ``-mean(A_norm * log pi(a|s))`` over the rollout, with the actor and
critic learning rates decayed linearly. Same as the authors' code, which has no known defect
here other than the shared ones fixed in :mod:`difftraffic_rl.algorithms.base` (bootstrapping
from the final rather than the post-reset observation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from difftraffic_rl.algorithms.base import (
    Algorithm,
    AlgorithmConfig,
    clip_and_step,
    normalize_advantages,
)
from difftraffic_rl.rollout import Rollout

__all__ = ["LR", "LRConfig", "likelihood_ratio_losses"]


@dataclass
class LRConfig(AlgorithmConfig):
    """LR hyperparameters; defaults are the paper's De Jong settings (see AlgorithmConfig)."""

    actor_lr: float = 1e-3


def likelihood_ratio_losses(
    algorithm: Algorithm, rollout: Rollout, advantages: torch.Tensor
) -> torch.Tensor:
    """Per-sample LR surrogate losses ``-A_i log pi(a_i|s_i)``, ``[M]`` (time-major).

    ``advantages [H, N]`` are normalized over the batch when ``normalize_advantage`` is set.
    """
    adv = advantages.detach().reshape(-1)
    if algorithm.config.normalize_advantage:
        adv = normalize_advantages(adv)
    obs = rollout.normalized_obs.detach().reshape(adv.shape[0], -1)
    actions = rollout.actions.reshape(adv.shape[0], -1)
    return -adv * algorithm.actor.log_prob(obs, actions)


class LR(Algorithm):
    """Likelihood-ratio policy gradient; see the module docstring."""

    config_class = LRConfig
    uses_analytic_gradients = False
    name = "lr"
    label = "LR"
    description = "likelihood-ratio (REINFORCE-style) policy gradient"

    def update_actor(self, rollout: Rollout, advantages: torch.Tensor) -> dict[str, float]:
        """One step on the mean LR surrogate."""
        loss = likelihood_ratio_losses(self, rollout, advantages).mean()
        self.actor_params.zero_grad()
        loss.backward()
        clip_and_step(self.actor_params, self.actor_optimizer, self.config.grad_norm)
        return {"losses/actor": float(loss.detach())}
