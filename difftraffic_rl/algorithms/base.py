"""Machinery shared by every algorithm: hyperparameters common to all, the actor, the critic and
its target, normalizers, the rollout / GAE / critic-fit epoch skeleton, learning-rate schedules,
and the "restore and back off" optimization guard of the authors' code.

An epoch (one rollout window) runs, in this order:

1. set the learning rates of this epoch (schedules),
2. cut the environment's graph and collect ``horizon`` steps from every world,
3. GAE advantages from the *target* critic (graph-attached for analytic algorithms),
4. the algorithm's actor update (:meth:`Algorithm.update_actor`),
5. fit the critic on lambda-returns ``A + V`` in un-normalized units,
6. Polyak-average the target critic.

The authors run the critic fit between the alpha-policy fit and the PPO phase of GI-PPO; neither
uses the other's parameters or random draws, so running the whole actor update first is
equivalent.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from difftraffic_rl.envs import VecEnv
from difftraffic_rl.flat_parameters import FlatParameters
from difftraffic_rl.networks import Actor, Critic
from difftraffic_rl.normalization import RunningMeanStd
from difftraffic_rl.rollout import EpisodeTracker, Rollout, collect_rollout, gae

__all__ = [
    "Algorithm",
    "AlgorithmConfig",
    "BackoffResult",
    "check_setting",
    "normalize_advantages",
    "optimize_with_backoff",
    "scheduled_lr",
    "snapshot",
]

SCHEDULES = ("linear", "constant")
"""Epoch-indexed schedules every algorithm has (PPO-based ones add ``"adaptive"``)."""


def check_setting(condition: bool, name: str, value: Any, valid: str) -> None:
    """``ValueError`` naming the setting, its value and what is valid, unless ``condition``.
    (The simulator's :func:`difftraffic.errors.check_range` checks a numeric range instead.)"""
    if not condition:
        raise ValueError(f"{name}={value!r} is invalid; valid range: {valid}")


@dataclass
class AlgorithmConfig:
    """Hyperparameters shared by every algorithm; defaults are the paper's function-optimization
    settings (appendix 7.4.2 and the authors' configuration files).

    Attributes:
        horizon: steps collected from every world per epoch (short-horizon window, >= 1).
        gamma: discount factor in (0, 1].
        gae_lambda: GAE lambda ("tau" in the authors' code) in (0, 1].
        actor_hidden: hidden widths of the actor MLP.
        critic_hidden: hidden widths of the critic MLP.
        actor_lr: actor learning rate (Adam).
        actor_betas: Adam betas of the actor optimizer.
        lr_schedule: ``"linear"`` (decays to ``min_lr`` at the last epoch) or ``"constant"``
            (PPO-based algorithms also accept ``"adaptive"``, see :class:`PPOConfig`).
        critic_lr: critic learning rate (Adam).
        critic_betas: Adam betas of the critic optimizer.
        critic_lr_schedule: schedule of the critic learning rate.
        min_lr: end point of the linear schedules.
        critic_iterations: passes over the rollout per critic fit.
        critic_num_batches: minibatches per pass (contiguous, time-major, as the authors').
        target_critic_alpha: Polyak weight of the *old* target parameters, in [0, 1).
        grad_norm: max global gradient norm (``None`` or 0 disables clipping).
        normalize_obs: normalize observations with running statistics.
        normalize_value: the critic predicts normalized values (running statistics of targets).
        normalize_advantage: normalize advantages per batch for likelihood-ratio losses.
    """

    horizon: int = 1
    gamma: float = 0.99
    gae_lambda: float = 0.95
    actor_hidden: tuple[int, ...] = (32, 32)
    critic_hidden: tuple[int, ...] = (32, 32)
    actor_lr: float = 1e-3
    actor_betas: tuple[float, float] = (0.7, 0.95)
    lr_schedule: str = "linear"
    critic_lr: float = 1e-3
    critic_betas: tuple[float, float] = (0.7, 0.95)
    critic_lr_schedule: str = "linear"
    min_lr: float = 1e-5
    critic_iterations: int = 16
    critic_num_batches: int = 4
    target_critic_alpha: float = 0.2
    grad_norm: float | None = 1.0
    normalize_obs: bool = True
    normalize_value: bool = True
    normalize_advantage: bool = True

    actor_lr_schedules: ClassVar[tuple[str, ...]] = SCHEDULES

    def __post_init__(self) -> None:
        self.actor_hidden = tuple(int(w) for w in self.actor_hidden)
        self.critic_hidden = tuple(int(w) for w in self.critic_hidden)
        self.actor_betas = tuple(float(b) for b in self.actor_betas)  # type: ignore[assignment]
        self.critic_betas = tuple(float(b) for b in self.critic_betas)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field outside its valid range."""
        check_setting(self.horizon >= 1, "horizon", self.horizon, ">= 1")
        check_setting(0 < self.gamma <= 1, "gamma", self.gamma, "(0, 1]")
        check_setting(0 < self.gae_lambda <= 1, "gae_lambda", self.gae_lambda, "(0, 1]")
        for name in ("actor_lr", "critic_lr", "min_lr"):
            check_setting(getattr(self, name) > 0, name, getattr(self, name), "> 0")
        for name in ("actor_betas", "critic_betas"):
            betas = getattr(self, name)
            check_setting(
                len(betas) == 2 and all(0 <= b < 1 for b in betas),
                name,
                betas,
                "two numbers in [0, 1)",
            )
        check_setting(
            self.lr_schedule in self.actor_lr_schedules,
            "lr_schedule",
            self.lr_schedule,
            str(self.actor_lr_schedules),
        )
        check_setting(
            self.critic_lr_schedule in SCHEDULES,
            "critic_lr_schedule",
            self.critic_lr_schedule,
            str(SCHEDULES),
        )
        for name in ("actor_hidden", "critic_hidden"):
            widths = getattr(self, name)
            check_setting(
                len(widths) >= 1 and min(widths) >= 1, name, widths, "one or more widths >= 1"
            )
        check_setting(
            self.critic_iterations >= 1, "critic_iterations", self.critic_iterations, ">= 1"
        )
        check_setting(
            self.critic_num_batches >= 1, "critic_num_batches", self.critic_num_batches, ">= 1"
        )
        check_setting(
            0 <= self.target_critic_alpha < 1,
            "target_critic_alpha",
            self.target_critic_alpha,
            "[0, 1)",
        )
        check_setting(
            self.grad_norm is None or self.grad_norm >= 0,
            "grad_norm",
            self.grad_norm,
            "None or >= 0",
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AlgorithmConfig:
        """Build from a mapping; unknown keys raise ``ValueError`` listing the valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys: {sorted(names)}")
        return cls(**values)


def scheduled_lr(initial: float, minimum: float, schedule: str, epoch: int, total: int) -> float:
    """Learning rate of 1-based ``epoch`` out of ``total``: constant, or linear to ``minimum``."""
    if schedule == "constant":
        return initial
    return initial + (minimum - initial) * min(epoch, total) / total


def normalize_advantages(advantages: torch.Tensor) -> torch.Tensor:
    """``(A - mean) / (std + 1e-8)`` over all entries (unbiased std; 0 std for one entry)."""
    std = advantages.std() if advantages.numel() > 1 else torch.zeros_like(advantages.mean())
    return (advantages - advantages.mean()) / (std + 1e-8)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Write ``lr`` into every parameter group of ``optimizer``."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_and_step(
    parameters: FlatParameters, optimizer: torch.optim.Optimizer, grad_norm: float | None
) -> None:
    """Replace NaN gradients by 0, clip the global norm to ``grad_norm``, take one step of
    ``optimizer`` (built over ``parameters.flat``)."""
    torch.nan_to_num_(parameters.grad, nan=0.0)
    if grad_norm:
        parameters.clip_grad_norm_(grad_norm)
    optimizer.step()


@dataclass
class BackoffResult:
    """Outcome of :func:`optimize_with_backoff`.

    Attributes:
        accepted: an attempt did not increase its loss; its parameters are kept.
        lr: learning rate of the accepted (or the last rejected) attempt.
        tries: attempts made (>= 1).
        first_loss, last_loss: the losses that decided the last attempt.
    """

    accepted: bool
    lr: float
    tries: int
    first_loss: float
    last_loss: float


def snapshot(module: nn.Module) -> Callable[[], None]:
    """Copy ``module``'s parameters and buffers now; the returned function puts them back (any
    number of times). Optimizer state is deliberately not part of it: see
    :func:`optimize_with_backoff`."""
    saved = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def restore() -> None:
        module.load_state_dict(saved)

    return restore


def optimize_with_backoff(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    attempt: Callable[[], tuple[float, float]],
    lr: float,
    max_tries: int,
    backoff: float,
    compounding: bool = True,
) -> BackoffResult:
    """Run ``attempt`` until it does not increase its loss, shrinking the learning rate.

    ``attempt()`` optimizes ``module`` and returns ``(first_loss, last_loss)``. If
    ``last_loss > first_loss`` the parameters are restored and the next try ``k`` (0-based) uses
    ``lr / backoff**k`` when ``compounding``, else ``lr / backoff`` for every retry (the
    authors' PPO guard). After ``max_tries`` rejections ``module`` is left as it was.

    As in the authors' code, only the parameters are restored: the optimizer keeps the moments
    the rejected try accumulated, so the next try does not replay the same first steps.
    Restoring the moments too makes a rejected alpha-policy fit keep being rejected
    (``docs/fidelity.md``).
    """
    restore = snapshot(module)
    first = last = math.nan
    try_lr = lr
    for k in range(max_tries):
        try_lr = lr / backoff ** (k if compounding else min(k, 1))
        set_lr(optimizer, try_lr)
        first, last = attempt()
        if last <= first:
            return BackoffResult(True, try_lr, k + 1, first, last)
        restore()
    return BackoffResult(False, try_lr, max_tries, first, last)


class Algorithm:
    """Base of all algorithms: owns the networks, normalizers and critic; runs epochs.

    Subclasses set ``config_class`` and ``uses_analytic_gradients`` and implement
    :meth:`update_actor`; everything stateful they add goes through :meth:`extra_state` /
    :meth:`load_extra_state` so checkpoints rebuild it.

    Args:
        config: hyperparameters (an instance of ``config_class``).
        obs_dim, action_dim: sizes of the task's observation and action.
        seed: seeds the weight initialization and every random draw of training.
        device, dtype: where the networks live and their floating type.
    """

    config_class: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig
    uses_analytic_gradients: ClassVar[bool] = False
    name: ClassVar[str] = "base"
    label: ClassVar[str] = "base"
    """How tables and plots name the algorithm, e.g. ``"GI-PPO"``."""
    description: ClassVar[str] = ""
    """One line for ``difftraffic-rl list``."""
    every_task: ClassVar[bool] = True
    """Part of the default sweep of every task (PE is a physics-only baseline)."""

    def __init__(
        self,
        config: AlgorithmConfig,
        obs_dim: int,
        action_dim: int,
        seed: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"config is a {type(config).__name__}; {type(self).__name__} needs "
                f"{self.config_class.__name__}"
            )
        self.config = config
        self.device = torch.device(device) if device is not None else torch.empty(0).device
        self.dtype = dtype
        init_generator = torch.Generator().manual_seed(seed)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.actor = Actor(obs_dim, action_dim, config.actor_hidden, init_generator)
        self.critic = Critic(obs_dim, config.critic_hidden, init_generator)
        self.actor.to(self.device, dtype)
        self.critic.to(self.device, dtype)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_params = FlatParameters(self.actor)
        self.critic_params = FlatParameters(self.critic)
        self.target_critic_params = FlatParameters(self.target_critic)
        self.obs_rms = RunningMeanStd((obs_dim,), device=self.device, dtype=dtype)
        self.value_rms = RunningMeanStd((), device=self.device, dtype=dtype)
        self.actor_optimizer = self.make_actor_optimizer()
        self.actor_lr_now = config.actor_lr
        self.critic_optimizer = self.critic_params.adam(config.critic_lr, config.critic_betas)

    def make_actor_optimizer(self) -> torch.optim.Optimizer:
        """The actor's main optimizer (Adam with ``actor_betas``)."""
        return self.actor_params.adam(self.config.actor_lr, self.config.actor_betas)

    # ----------------------------------------------------------------------------- evaluation
    def normalize_obs(self, obs: torch.Tensor, stats: RunningMeanStd | None = None) -> torch.Tensor:
        """Raw observation -> actor/critic input, using ``stats`` (default: the live ones)."""
        if not self.config.normalize_obs:
            return obs
        return (stats or self.obs_rms).normalize(obs)

    def value(self, critic: nn.Module, obs_n: torch.Tensor) -> torch.Tensor:
        """Un-normalized value ``[...]`` of normalized observations ``[..., O]``."""
        out = critic(obs_n)
        return self.value_rms.unnormalize(out) if self.config.normalize_value else out

    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Environment action ``tanh(a)`` ``[N, D]`` for raw observations ``obs [N, O]``.

        ``deterministic`` uses the mean; otherwise ``eps`` is drawn from ``generator``.
        """
        mean, std = self.actor(self.normalize_obs(obs))
        if deterministic:
            return torch.tanh(mean)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return torch.tanh(mean + std * eps)

    # ---------------------------------------------------------------------------------- epoch
    def actor_lr_for_epoch(self, epoch: int, total_epochs: int) -> float:
        """The actor's main learning rate for 1-based ``epoch`` (``lr_schedule``)."""
        cfg = self.config
        return scheduled_lr(cfg.actor_lr, cfg.min_lr, cfg.lr_schedule, epoch, total_epochs)

    def set_learning_rates(self, epoch: int, total_epochs: int) -> dict[str, float]:
        """Apply the schedules for 1-based ``epoch``; return the rates as metrics."""
        cfg = self.config
        actor_lr = self.actor_lr_for_epoch(epoch, total_epochs)
        critic_lr = scheduled_lr(
            cfg.critic_lr, cfg.min_lr, cfg.critic_lr_schedule, epoch, total_epochs
        )
        self.actor_lr_now = actor_lr
        set_lr(self.actor_optimizer, actor_lr)
        set_lr(self.critic_optimizer, critic_lr)
        return {"charts/actor_lr": actor_lr, "charts/critic_lr": critic_lr}

    def collect(self, env: VecEnv, obs: torch.Tensor, tracker: EpisodeTracker) -> Rollout:
        """Cut the graph and roll out ``horizon`` steps from raw observations ``obs [N, O]``."""
        env.detach()
        frozen = copy.deepcopy(self.obs_rms)
        return collect_rollout(
            env,
            obs.detach(),
            self.actor,
            value_fn=lambda o: self.value(self.target_critic, o),
            normalize_obs=lambda o: self.normalize_obs(o, frozen),
            observe=self.obs_rms.update if self.config.normalize_obs else lambda o: None,
            horizon=self.config.horizon,
            generator=self.generator,
            tracker=tracker,
            differentiable=self.uses_analytic_gradients,
        )

    def train_epoch(
        self, env: VecEnv, obs: torch.Tensor, tracker: EpisodeTracker, epoch: int, total_epochs: int
    ) -> tuple[Rollout, dict[str, float]]:
        """Run one epoch (see the module docstring); return the rollout and scalar metrics."""
        metrics = self.set_learning_rates(epoch, total_epochs)
        rollout = self.collect(env, obs, tracker)
        cfg = self.config
        advantages = gae(
            rollout.rewards,
            rollout.values,
            rollout.next_values,
            rollout.dones,
            cfg.gamma,
            cfg.gae_lambda,
        )
        metrics.update(self.update_actor(rollout, advantages))
        metrics.update(self.fit_critic(rollout, advantages.detach()))
        self.update_target_critic()
        return rollout, metrics

    def update_actor(self, rollout: Rollout, advantages: torch.Tensor) -> dict[str, float]:
        """The algorithm's policy update from ``rollout`` and ``advantages [H, N]``."""
        raise NotImplementedError

    def fit_critic(self, rollout: Rollout, advantages: torch.Tensor) -> dict[str, float]:
        """Fit the critic on lambda-returns ``A + V`` (un-normalized MSE, contiguous batches)."""
        cfg = self.config
        targets = (advantages + rollout.values.detach()).reshape(-1)
        obs = rollout.normalized_obs.detach().reshape(targets.shape[0], -1)
        if cfg.normalize_value:
            self.value_rms.update(targets)
        k = cfg.critic_num_batches
        batches = list(zip(obs.tensor_split(k), targets.tensor_split(k), strict=True))
        total = torch.zeros((), device=targets.device, dtype=targets.dtype)
        for _ in range(cfg.critic_iterations):
            for obs_b, target_b in batches:
                if target_b.numel() == 0:
                    continue
                loss = (self.value(self.critic, obs_b) - target_b).square().mean()
                self.critic_params.zero_grad()
                loss.backward()
                clip_and_step(self.critic_params, self.critic_optimizer, cfg.grad_norm)
                total = total + loss.detach()
        count = cfg.critic_iterations * sum(1 for _, t in batches if t.numel())
        return {"losses/critic": float(total) / count}

    @torch.no_grad()
    def update_target_critic(self) -> None:
        """``theta_target <- alpha * theta_target + (1 - alpha) * theta``."""
        alpha = self.config.target_critic_alpha
        self.target_critic_params.flat.mul_(alpha).add_(self.critic_params.flat, alpha=1 - alpha)

    # ---------------------------------------------------------------------------- checkpoints
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer by name (subclasses with more optimizers extend this)."""
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer}

    def extra_state(self) -> dict[str, Any]:
        """Algorithm-specific state beyond networks and optimizers (e.g. alpha)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly."""
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "obs_rms": self.obs_rms.state_dict(),
            "value_rms": self.value_rms.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "generator": self.generator.get_state(),
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        self.obs_rms.load_state_dict(state["obs_rms"])
        self.value_rms.load_state_dict(state["value_rms"])
        for name, optimizer in self.optimizers().items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.generator.set_state(state["generator"].cpu())
        self.load_extra_state(state["extra"])
