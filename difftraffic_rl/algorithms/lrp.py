"""LR+RP: the LR and RP gradients interpolated by their sample variances (paper 7.4.1,
Parmas et al. 2018).

``grad = k_LR * grad_LR + (1 - k_LR) * grad_RP`` with ``k_LR = var_RP / (var_RP + var_LR)``,
where each variance is the trace of the sample covariance of ``num_variance_samples`` per-sample
gradients (one backward pass each). The weights are constants (no gradient flows through them).

Differences from the authors' code, and why: the per-sample gradients cover *all* actor
parameters (the reference truncates them to the first 512 entries, which never include the mean
and std heads; the trace of a covariance only needs per-parameter variances, so the full vector
costs nothing extra), and the RP samples are drawn at random like the LR samples (the reference
takes the first 16 in order).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from difftraffic_rl.algorithms.base import Algorithm, AlgorithmConfig, check_setting, clip_and_step
from difftraffic_rl.algorithms.lr import likelihood_ratio_losses
from difftraffic_rl.algorithms.rp import reparameterized_objectives
from difftraffic_rl.gradients import row_gradients
from difftraffic_rl.rollout import Rollout

__all__ = ["LRP", "LRPConfig", "gradient_variance", "interpolation_weight"]


@dataclass
class LRPConfig(AlgorithmConfig):
    """LR+RP hyperparameters; defaults are the paper's De Jong settings.

    Attributes:
        num_variance_samples: per-sample gradients used for each variance estimate (>= 2).
    """

    actor_lr: float = 1e-3
    num_variance_samples: int = 16

    def validate(self) -> None:
        """See :meth:`AlgorithmConfig.validate`."""
        super().validate()
        check_setting(
            self.num_variance_samples >= 2,
            "num_variance_samples",
            self.num_variance_samples,
            ">= 2",
        )


def gradient_variance(per_sample_grads: torch.Tensor) -> torch.Tensor:
    """Trace of the unbiased sample covariance of ``[K, P]`` gradients (K >= 2) -> scalar."""
    return per_sample_grads.var(dim=0, unbiased=True).sum()


def interpolation_weight(var_lr: torch.Tensor, var_rp: torch.Tensor) -> torch.Tensor:
    """``k_LR = var_RP / (var_LR + var_RP + 1e-8)``, the weight of the LR gradient."""
    return var_rp / (var_lr + var_rp + 1e-8)


def _per_sample_grads(
    losses: torch.Tensor, params: list[nn.Parameter], indices: torch.Tensor, vectorize: bool
) -> torch.Tensor:
    """Flattened gradients of ``losses[i]`` for ``i in indices``, ``[K, P]`` (graph retained)."""
    grads = row_gradients(losses[indices], params, vectorize)
    return torch.cat([g.reshape(indices.shape[0], -1) for g in grads], dim=1)


class LRP(Algorithm):
    """Variance-weighted interpolation of LR and RP gradients; see the module docstring."""

    config_class = LRPConfig
    uses_analytic_gradients = True
    name = "lrp"
    label = "LR+RP"
    description = "LR and RP gradients interpolated by their sample variances"
    config: LRPConfig

    def _sample_indices(self, count: int) -> torch.Tensor:
        k = min(self.config.num_variance_samples, count)
        return torch.randperm(count, generator=self.generator, device=self.generator.device)[:k]

    def update_actor(self, rollout: Rollout, advantages: torch.Tensor) -> dict[str, float]:
        """Estimate both variances, then one step on the interpolated loss."""
        params = list(self.actor.parameters())
        lr_losses = likelihood_ratio_losses(self, rollout, advantages)
        rp_losses = -reparameterized_objectives(rollout, advantages)
        var_lr, var_rp = (
            gradient_variance(
                _per_sample_grads(
                    losses,
                    params,
                    self._sample_indices(losses.shape[0]),
                    rollout.vectorized_backward,
                )
            )
            for losses in (lr_losses, rp_losses)
        )
        k_lr = interpolation_weight(var_lr, var_rp).detach()
        loss = k_lr * lr_losses.mean() + (1 - k_lr) * rp_losses.mean()
        self.actor_params.zero_grad()
        loss.backward()
        clip_and_step(self.actor_params, self.actor_optimizer, self.config.grad_norm)
        return {
            "losses/actor": float(loss.detach()),
            "lrp/k_lr": float(k_lr),
            "lrp/var_lr": float(var_lr),
            "lrp/var_rp": float(var_rp),
        }
