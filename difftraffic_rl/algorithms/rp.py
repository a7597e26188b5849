"""RP: the reparameterization (analytic) policy gradient with a critic bootstrap, SHAC-like
(paper 7.2.2 and 7.4.1).

The lambda-return ``G_t = A_t + V(s_t)`` of every trajectory start in the window (step 0 and
every in-window episode start) is kept attached to the autograd graph through rewards, the
environment, the target critic's bootstrap at the window end and the actions
``a = mu + sigma * eps``; one Adam step per epoch ascends their mean. Same as the authors' code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from difftraffic_rl.algorithms.base import Algorithm, AlgorithmConfig, clip_and_step
from difftraffic_rl.rollout import Rollout

__all__ = ["RP", "RPConfig", "reparameterized_objectives"]


@dataclass
class RPConfig(AlgorithmConfig):
    """RP hyperparameters; defaults are the paper's De Jong settings (see AlgorithmConfig)."""

    actor_lr: float = 1e-2


def reparameterized_objectives(rollout: Rollout, advantages: torch.Tensor) -> torch.Tensor:
    """Graph-attached lambda-returns of the trajectory starts, ``[K]`` (time-major order)."""
    return (advantages + rollout.values)[rollout.episode_starts]


class RP(Algorithm):
    """Reparameterization policy gradient; see the module docstring."""

    config_class = RPConfig
    uses_analytic_gradients = True
    name = "rp"
    label = "RP"
    description = "reparameterization gradient through the differentiable simulator"

    def actor_loss(
        self, rollout: Rollout, advantages: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss the actor step descends (minus the mean lambda-return of the trajectory
        starts) and extra metrics; subclasses that add terms override this."""
        return -reparameterized_objectives(rollout, advantages).mean(), {}

    def update_actor(self, rollout: Rollout, advantages: torch.Tensor) -> dict[str, float]:
        """One clipped Adam step on :meth:`actor_loss`."""
        loss, metrics = self.actor_loss(rollout, advantages)
        self.actor_params.zero_grad()
        loss.backward()
        clip_and_step(self.actor_params, self.actor_optimizer, self.config.grad_norm)
        return {"losses/actor": float(loss.detach()), **metrics}
