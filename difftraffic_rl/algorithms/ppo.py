"""PPO with the clipped surrogate (paper Eq. 14), as the paper's baseline.

Reference: Schulman et al. 2017; the authors' implementation follows rl_games without entropy,
value or bound losses.

Algorithm (per epoch, after the rollout of :mod:`difftraffic_rl.algorithms.base`):
normalize the GAE advantages over the batch; run ``mini_epochs`` passes of ``minibatch_size``
minibatches on ``-mean(min(r A, clip(r, 1 - eps, 1 + eps) A))`` with
``r = pi_theta(a|s) / pi_old(a|s)``. A monotonicity guard keeps the update only if the mean loss
of the last pass is not above the first pass's; otherwise the actor's parameters (not Adam's
moments) are restored and the passes repeat at the epoch's rate divided by ``lr_backoff`` (every
retry at that same rate), up to ``max_optim_iter`` tries, after which the old policy is kept.
With ``lr_carryover: on_failure`` (the authors' rule) an epoch whose tries all failed divides
every later epoch's rate by ``lr_backoff``, so the rate only ever falls; ``"none"`` never
carries a reduction over.

``lr_schedule: adaptive`` (the appendix's "Adaptive" rate for Cartpole, rl_games'
``AdaptiveScheduler``) keeps the KL divergence of each update near ``kl_target``: after the
epoch's update, ``KL(pi_new || pi_start)`` (``pi_start`` is the policy the update started from) is
averaged over the batch and the next epoch's rate is divided by ``adaptive_lr_factor`` when the
KL exceeds ``2 * kl_target``, multiplied by it when the KL is below ``kl_target / 2``, and kept
inside the band, always clamped to ``[adaptive_min_lr, adaptive_max_lr]``
(:func:`adaptive_lr`). An epoch whose first try the guard rejected lowers the rate the rule
starts from once by ``lr_backoff``, however many tries it took (the authors' stable-PPO rule;
starting from the last try's rate instead compounds to ~1e-10 within a few epochs of rejected
GI-PPO phases, measured on Cartpole). The rule carries the rate across epochs by itself, so
``lr_carryover`` must be ``"none"``.

Differences from the authors' code, and why:

* the rate is written before each try; the reference writes it after each minibatch step, so
  its first minibatch of an epoch still runs at the previous try's rate (self-described as
  erroneous).
* minibatches are shuffled with the run's generator (the reference slices in a fixed order;
  identical at the paper's setting, where the batch is one minibatch).
* the critic learning rate follows ``critic_lr_schedule`` (linear) like every other algorithm;
  the reference leaves PPO's critic rate constant by accident.
* the log-ratio is clamped to ``[-max_log_ratio, max_log_ratio]`` (reference: ``<= 64``).
* the adaptive rate is updated once per epoch from the KL of the accepted update; rl_games
  updates it after every minibatch from the KL measured before that minibatch's step (the
  appendix only says the KL "between the updated policy and the original policy" is kept at
  0.008).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from difftraffic_rl.algorithms.base import (
    SCHEDULES,
    Algorithm,
    AlgorithmConfig,
    check_setting,
    clip_and_step,
    normalize_advantages,
    optimize_with_backoff,
)
from difftraffic_rl.rollout import Rollout

__all__ = ["PPO", "PPOConfig", "adaptive_lr", "clipped_surrogate_loss", "gaussian_kl"]

CARRYOVER_RULES = ("on_failure", "none")


@dataclass
class PPOConfig(AlgorithmConfig):
    """PPO hyperparameters; defaults are the paper's De Jong 1-D settings.

    Attributes:
        clip: ``eps_clip`` of Eq. 14, in (0, 1).
        mini_epochs: passes over the batch per update (>= 1).
        minibatch_size: samples per minibatch (>= 1).
        max_optim_iter: tries of the monotonicity guard (>= 1).
        lr_backoff: divisor of the learning rate per rejected try (> 1).
        max_log_ratio: clamp of ``log r`` before ``exp`` (numerical safety, > 0).
        lr_carryover: ``"on_failure"`` or ``"none"`` (see the module doc; ``"none"`` with
            ``lr_schedule: adaptive``).
        kl_target: KL divergence per update that ``lr_schedule: adaptive`` aims at (> 0; the
            appendix's Cartpole value is 0.008).
        adaptive_lr_factor: divisor / multiplier of the adaptive rate per epoch (> 1).
        adaptive_min_lr, adaptive_max_lr: bounds of the adaptive rate (> 0 and
            ``adaptive_max_lr >= adaptive_min_lr``; rl_games': 1e-6, 1e-2).
    """

    actor_lr_schedules: ClassVar[tuple[str, ...]] = (*SCHEDULES, "adaptive")

    actor_lr: float = 1e-4
    actor_betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "constant"
    clip: float = 0.2
    mini_epochs: int = 5
    minibatch_size: int = 64
    max_optim_iter: int = 8
    lr_backoff: float = 1.5
    max_log_ratio: float = 16.0
    lr_carryover: str = "on_failure"
    kl_target: float = 0.008
    adaptive_lr_factor: float = 1.5
    adaptive_min_lr: float = 1e-6
    adaptive_max_lr: float = 1e-2

    def validate(self) -> None:
        """See :meth:`AlgorithmConfig.validate`."""
        super().validate()
        check_setting(0 < self.clip < 1, "clip", self.clip, "(0, 1)")
        check_setting(self.mini_epochs >= 1, "mini_epochs", self.mini_epochs, ">= 1")
        check_setting(self.minibatch_size >= 1, "minibatch_size", self.minibatch_size, ">= 1")
        check_setting(self.max_optim_iter >= 1, "max_optim_iter", self.max_optim_iter, ">= 1")
        check_setting(self.lr_backoff > 1, "lr_backoff", self.lr_backoff, "> 1")
        check_setting(self.max_log_ratio > 0, "max_log_ratio", self.max_log_ratio, "> 0")
        check_setting(
            self.lr_carryover in CARRYOVER_RULES,
            "lr_carryover",
            self.lr_carryover,
            str(CARRYOVER_RULES),
        )
        check_setting(
            math.isfinite(self.kl_target) and self.kl_target > 0,
            "kl_target",
            self.kl_target,
            "finite and > 0",
        )
        check_setting(
            self.adaptive_lr_factor > 1, "adaptive_lr_factor", self.adaptive_lr_factor, "> 1"
        )
        check_setting(self.adaptive_min_lr > 0, "adaptive_min_lr", self.adaptive_min_lr, "> 0")
        check_setting(
            self.adaptive_max_lr >= self.adaptive_min_lr,
            "adaptive_max_lr",
            self.adaptive_max_lr,
            f">= adaptive_min_lr={self.adaptive_min_lr}",
        )
        if self.lr_schedule == "adaptive":
            check_setting(
                self.lr_carryover == "none",
                "lr_carryover",
                self.lr_carryover,
                "'none' with lr_schedule='adaptive' (the KL rule carries the rate over)",
            )


def clipped_surrogate_loss(
    log_prob: torch.Tensor,
    log_prob_denominator: torch.Tensor,
    advantages: torch.Tensor,
    clip: float,
    max_log_ratio: float = 16.0,
) -> torch.Tensor:
    """Negative clipped surrogate, ``-mean(min(r A, clip(r, 1-clip, 1+clip) A))``.

    Args:
        log_prob: ``[M]`` ``log pi_theta(a_i|s_i)`` (differentiable).
        log_prob_denominator: ``[M]`` log of the importance-sampling density: ``pi_old`` for
            PPO (Eq. 14), ``pi_h`` for GI-PPO (Eq. 16).
        advantages: ``[M]``.
    """
    log_ratio = (log_prob - log_prob_denominator).clamp(-max_log_ratio, max_log_ratio)
    ratio = torch.exp(log_ratio)
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    return -surrogate.mean()


def adaptive_lr(lr: float, kl: float, config: PPOConfig) -> float:
    """Next learning rate of ``lr_schedule: adaptive`` after an update of KL divergence ``kl``.

    ``lr / factor`` if ``kl > 2 * kl_target``, ``lr * factor`` if ``kl < kl_target / 2``,
    otherwise ``lr``; a change is clamped to ``[adaptive_min_lr, adaptive_max_lr]``.
    """
    if kl > 2 * config.kl_target:
        return max(lr / config.adaptive_lr_factor, config.adaptive_min_lr)
    if kl < config.kl_target / 2:
        return min(lr * config.adaptive_lr_factor, config.adaptive_max_lr)
    return lr


def gaussian_kl(
    mean: torch.Tensor, std: torch.Tensor, ref_mean: torch.Tensor, ref_std: torch.Tensor
) -> torch.Tensor:
    """``KL(N(mean, std) || N(ref_mean, ref_std))`` of diagonal Gaussians.

    All inputs ``[..., D]``; returns ``[...]`` (summed over the action dimensions).
    """
    log_ratio = torch.log(ref_std) - torch.log(std)
    return (
        log_ratio + (std.square() + (mean - ref_mean).square()) / (2 * ref_std.square()) - 0.5
    ).sum(dim=-1)


class PPO(Algorithm):
    """Proximal policy optimization (no analytic gradients); see the module docstring."""

    config_class = PPOConfig
    uses_analytic_gradients = False
    name = "ppo"
    label = "PPO"
    description = "proximal policy optimization with the authors' monotonicity guard"
    config: PPOConfig

    def __init__(self, config: PPOConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.lr_scale = 1.0
        self.adaptive_lr = config.actor_lr

    def actor_lr_for_epoch(self, epoch: int, total_epochs: int) -> float:
        """The KL-adapted rate under ``lr_schedule: adaptive``, else the base schedule's."""
        if self.config.lr_schedule == "adaptive":
            return self.adaptive_lr
        return super().actor_lr_for_epoch(epoch, total_epochs)

    def update_actor(self, rollout: Rollout, advantages: torch.Tensor) -> dict[str, float]:
        """Clipped-surrogate update against ``pi_old`` with normalized advantages."""
        adv = advantages.reshape(-1)
        if self.config.normalize_advantage:
            adv = normalize_advantages(adv)
        log_prob_old = rollout.log_probs.reshape(-1)
        return self.ppo_update(rollout, lambda idx: log_prob_old[idx], adv)

    def ppo_update(
        self,
        rollout: Rollout,
        log_prob_denominator: Callable[[torch.Tensor], torch.Tensor],
        advantages: torch.Tensor,
    ) -> dict[str, float]:
        """Guarded minibatch optimization of the clipped surrogate.

        Args:
            rollout: supplies observations and actions (flattened time-major to ``[M, ...]``).
            log_prob_denominator: maps a minibatch's sample indices ``[m]`` to their
                importance-sampling log-densities ``[m]`` (a function, because GI-PPO decides its
                denominator per minibatch).
            advantages: ``[M]`` advantages as used in the loss.
        """
        cfg = self.config
        obs = rollout.normalized_obs.detach().reshape(rollout.num_samples, -1)
        actions = rollout.actions.reshape(rollout.num_samples, -1)
        with torch.no_grad():
            start_mean, start_std = self.actor(obs)

        def attempt() -> tuple[float, float]:
            pass_losses = []
            for _ in range(cfg.mini_epochs):
                order = torch.randperm(
                    obs.shape[0], generator=self.generator, device=self.generator.device
                ).to(obs.device)
                losses = []
                for idx in order.split(cfg.minibatch_size):
                    loss = clipped_surrogate_loss(
                        self.actor.log_prob(obs[idx], actions[idx]),
                        log_prob_denominator(idx),
                        advantages[idx],
                        cfg.clip,
                        cfg.max_log_ratio,
                    )
                    self.actor_params.zero_grad()
                    loss.backward()
                    clip_and_step(self.actor_params, self.actor_optimizer, cfg.grad_norm)
                    losses.append(loss.detach())
                pass_losses.append(torch.stack(losses).mean())
            return float(pass_losses[0]), float(pass_losses[-1])

        result = optimize_with_backoff(
            self.actor,
            self.actor_optimizer,
            attempt,
            self.actor_lr_now * self.lr_scale,
            cfg.max_optim_iter,
            cfg.lr_backoff,
            compounding=False,
        )
        if cfg.lr_carryover == "on_failure" and not result.accepted:
            self.lr_scale /= cfg.lr_backoff
        with torch.no_grad():
            mean, std = self.actor(obs)
            kl = float(gaussian_kl(mean, std, start_mean, start_std).mean())
        if cfg.lr_schedule == "adaptive":
            start = self.adaptive_lr if result.tries == 1 else self.adaptive_lr / cfg.lr_backoff
            self.adaptive_lr = adaptive_lr(start, kl, cfg)
        return {
            "losses/actor": result.last_loss,
            "ppo/tries": float(result.tries),
            "ppo/accepted": float(result.accepted),
            "ppo/lr": result.lr,
            "ppo/kl": kl,
        }

    def extra_state(self) -> dict[str, Any]:
        """The carried-over learning-rate scale and the adaptive rate."""
        return {"lr_scale": self.lr_scale, "adaptive_lr": self.adaptive_lr}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""
        self.lr_scale = float(state["lr_scale"])
        self.adaptive_lr = float(state["adaptive_lr"])
