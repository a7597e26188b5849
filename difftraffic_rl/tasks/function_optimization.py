"""Function optimization as one-step episodes (paper appendix 7.5.1).

Every episode is a single step: the observation is the constant ``[0]``, the action
``u in [-1, 1]^n`` is scaled to ``x = bound * u`` and the reward is ``-F(x)``, where ``F`` is De
Jong's sphere (bound 5.12) or Ackley's function (bound 32.768). Both optima are ``x = 0`` with
reward 0. The episode ends by its one-step time limit (``truncated``), so critics bootstrap as the
authors' code does.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from difftraffic_rl.envs import check_action

__all__ = ["BOUNDS", "FunctionOptimizationEnv", "ackley", "dejong"]

BOUNDS: dict[str, float] = {"dejong": 5.12, "ackley": 32.768}


def dejong(x: torch.Tensor) -> torch.Tensor:
    """De Jong's sphere ``F_D(x) = sum_i x_i^2``; ``x: [..., n]`` -> ``[...]``."""
    return (x * x).sum(dim=-1)


def ackley(
    x: torch.Tensor, a: float = 20.0, b: float = 0.2, c: float = 2 * math.pi
) -> torch.Tensor:
    """Ackley's function ``F_A(x)``; ``x: [..., n]`` -> ``[...]``, minimum 0 at ``x = 0``.

    ``F_A = -a exp(-b sqrt(mean x^2)) - exp(mean cos(c x)) + a + e``. The square root has an
    infinite derivative at 0, so it is evaluated on a safe argument there: the gradient at
    ``x = 0`` is exactly 0 (the symmetric subgradient) instead of NaN.
    """
    mean_square = (x * x).mean(dim=-1)
    positive = mean_square > 0
    radius = torch.where(positive, torch.sqrt(torch.where(positive, mean_square, 1.0)), 0.0)
    return -a * torch.exp(-b * radius) - torch.exp(torch.cos(c * x).mean(dim=-1)) + a + math.e


_FUNCTIONS = {"dejong": dejong, "ackley": ackley}


class FunctionOptimizationEnv:
    """``num_envs`` one-step bandits maximizing ``-F(bound * action)``.

    Args:
        num_envs: number of parallel worlds ``B`` (>= 1).
        function: ``"dejong"`` or ``"ackley"``.
        dim: dimension ``n`` of ``x`` and of the action (>= 1).
        device: where observations and rewards live; ``None`` means the default device.
        dtype: floating dtype of observations and rewards.
    """

    def __init__(
        self,
        num_envs: int,
        function: Literal["dejong", "ackley"] = "dejong",
        dim: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if function not in _FUNCTIONS:
            raise ValueError(f"function={function!r}; expected one of {sorted(_FUNCTIONS)}")
        if dim < 1:
            raise ValueError(f"dim={dim} must be >= 1")
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs} must be >= 1")
        self.function = function
        self.bound = BOUNDS[function]
        self.num_envs = num_envs
        self.obs_dim = 1
        self.action_dim = dim
        self.max_episode_steps = 1
        self.device = torch.device(device) if device is not None else torch.empty(0).device
        self.dtype = dtype

    def _observation(self) -> torch.Tensor:
        return torch.zeros(self.num_envs, 1, device=self.device, dtype=self.dtype)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Return the constant observation ``[B, 1]`` of zeros (the task has no randomness)."""
        return self._observation()

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Evaluate ``reward = -F(bound * clip(action, -1, 1))``; every episode ends here.

        Args:
            action: ``[B, n]`` in ``[-1, 1]``.

        Returns:
            ``obs [B, 1]`` zeros, ``reward [B]``, ``terminated [B]`` all False, ``truncated [B]``
            all True, ``info = {"final_obs": [B, 1] zeros}``.
        """
        check_action(action, self.num_envs, self.action_dim)
        x = action.clamp(-1.0, 1.0) * self.bound
        reward = -_FUNCTIONS[self.function](x)
        done = torch.ones(self.num_envs, dtype=torch.bool, device=action.device)
        obs = self._observation()
        return obs, reward, torch.zeros_like(done), done, {"final_obs": obs}

    def detach(self) -> None:
        """Nothing to cut: the task holds no state between steps."""

    def state_dict(self) -> dict[str, Any]:
        """The task is stateless; resuming needs nothing."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Accept the empty state written by :meth:`state_dict`."""
