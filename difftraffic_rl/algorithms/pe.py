"""PE: policy enhancement (Qiao et al. 2021, "Efficient Differentiable Simulation of Articulated
Bodies", ICML), the paper's sixth baseline on the physics tasks (appendix 7.4.1, "PE").

What it adds to RP (:mod:`difftraffic_rl.algorithms.rp`): RP ascends the window's lambda-returns
through the whole differentiable rollout. PE also uses, for every sample ``(t, n)``, the
simulator's one-step action gradient of the action value

    g_t = d(r_t + gamma V(s_{t+1})) / d a_t        (target critic, 0 bootstrap on termination)

which points from the policy's action ``a_t`` toward an *enhanced action* ``a_t + eta g_t``.
The policy is pulled toward the enhanced actions by the term

    L_PE = -mean_{t, n} <g_t, a_theta(s_t, eps_t)>,    a_theta = mu(s_t) + sigma(s_t) eps_t,

evaluated at the *stored* states and noises (the state is detached, so the term moves the policy
at fixed states and does not reach earlier actions). The actor loss is
``L_RP + enhancement_weight * L_PE``, one clipped Adam step per epoch, like RP.

Differences from the reference, and why: Qiao et al. regress the policy onto the enhanced actions
with ``||a_theta - (a + eta g)||^2``; at the current parameters that loss has the gradient
``-2 eta <g, da_theta/dtheta>``, which is ``L_PE``'s with ``enhancement_weight = 2 eta``, and
with one step per epoch the two are the same update. The paper's authors did not publish their
PE code (their repository holds the function-optimization problems only), so this follows the
paper's description ("a SHAC-style learner", appendix 7.4.1) and the project's issue 6;
``g_t`` is taken in pre-tanh action space, as GI-PPO's ``dA/da``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from difftraffic_rl.algorithms.base import check_setting
from difftraffic_rl.algorithms.rp import RP, RPConfig
from difftraffic_rl.gradients import row_gradients
from difftraffic_rl.rollout import Rollout

__all__ = ["PE", "PEConfig", "action_value_gradients", "enhancement_loss"]


@dataclass
class PEConfig(RPConfig):
    """PE hyperparameters: RP's, plus

    Attributes:
        enhancement_weight: weight of ``L_PE`` in the actor loss (>= 0; 0 is RP).
    """

    enhancement_weight: float = 1.0

    def validate(self) -> None:
        """See :meth:`AlgorithmConfig.validate`."""
        super().validate()
        check_setting(
            self.enhancement_weight >= 0, "enhancement_weight", self.enhancement_weight, ">= 0"
        )


def action_value_gradients(
    rewards: torch.Tensor,
    next_values: torch.Tensor,
    action_steps: Sequence[torch.Tensor],
    gamma: float,
    vectorize: bool = True,
) -> torch.Tensor:
    """``d(r_t + gamma V'_t)/da_t`` ``[H, N, D]``, detached, for every step of a rollout.

    Args:
        rewards, next_values: ``[H, N]``, graph-attached to ``action_steps``.
        action_steps: ``H`` tensors ``[N, D]``, the actions that entered the environment.
        vectorize: the graph supports batched backward passes (``Rollout.vectorized_backward``).

    Only the step's own action is differentiated (one backward pass per step, batched into one
    with ``vectorize``, see :mod:`difftraffic_rl.gradients`; the graph is kept), so the effect of
    ``a_t`` on later rewards, which RP already follows, is excluded. Worlds are independent, so
    summing a step's values over worlds separates them.
    """
    action_values = rewards + gamma * next_values
    grads = row_gradients(action_values, action_steps, vectorize)
    return torch.stack([grads[t][t] for t in range(len(action_steps))])


def enhancement_loss(policy_actions: torch.Tensor, action_gradients: torch.Tensor) -> torch.Tensor:
    """``L_PE = -mean_{t, n} sum_d g * a`` for ``policy_actions`` and ``action_gradients``
    ``[H, N, D]`` (the latter treated as constants)."""
    return -(action_gradients.detach() * policy_actions).sum(-1).mean()


class PE(RP):
    """RP plus the policy-enhancement term; see the module docstring."""

    config_class = PEConfig
    name = "pe"
    label = "PE"
    description = "RP plus policy enhancement by one-step action gradients (physics)"
    every_task = False
    config: PEConfig

    def actor_loss(
        self, rollout: Rollout, advantages: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``L_RP + enhancement_weight * L_PE``; logs ``L_PE`` and the mean ``|g|``."""
        rp_loss, metrics = super().actor_loss(rollout, advantages)
        grads = action_value_gradients(
            rollout.rewards,
            rollout.next_values,
            rollout.action_steps,
            self.config.gamma,
            rollout.vectorized_backward,
        )
        mean, std = self.actor(rollout.normalized_obs.detach())
        pe_loss = enhancement_loss(mean + std * rollout.eps, grads)
        metrics.update(
            {
                "pe/loss": float(pe_loss.detach()),
                "pe/action_grad_norm": float(grads.norm(dim=-1).mean()),
            }
        )
        return rp_loss + self.config.enhancement_weight * pe_loss, metrics
