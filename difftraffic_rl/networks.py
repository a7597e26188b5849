"""Actor and critic MLPs of the paper (ELU, LayerNorm after each hidden activation).

Weights are initialised from an explicit ``torch.Generator`` so that one seed gives one network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Actor", "Critic", "gaussian_log_prob"]

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _trunk(in_dim: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ELU(), nn.LayerNorm(width)]
        in_dim = width
    return nn.Sequential(*layers)


def _default_init(layer: nn.Linear, generator: torch.Generator) -> None:
    """PyTorch's default ``nn.Linear`` init (U(+-1/sqrt(fan_in))), drawn from ``generator``."""
    bound = 1.0 / math.sqrt(layer.in_features)
    nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


def gaussian_log_prob(action: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Log-density of a diagonal Gaussian: ``[..., D]`` inputs -> ``[...]``."""
    z = (action - mean) / std
    return (-0.5 * z.square() - torch.log(std) - LOG_SQRT_2PI).sum(dim=-1)


class Actor(nn.Module):
    """Reparameterized Gaussian policy ``a = mu(s) + sigma(s) * eps``, ``eps ~ N(0, I)``.

    Trunk ``Linear-ELU-LayerNorm`` per hidden width, then two linear heads: the mean and the log
    of the state-dependent standard deviation. Actions are *pre-tanh*; the trainer passes
    ``tanh(a)`` to the environment and log-probabilities ignore the tanh (as the authors' code;
    the tanh Jacobian does not depend on the policy, so probability ratios are unaffected).

    Args:
        obs_dim: observation size.
        action_dim: action size ``D``.
        hidden: hidden widths, e.g. ``(32, 32)``.
        generator: CPU generator the initial weights are drawn from.
    """

    def __init__(
        self, obs_dim: int, action_dim: int, hidden: Sequence[int], generator: torch.Generator
    ) -> None:
        super().__init__()
        self.trunk = _trunk(obs_dim, hidden)
        width = hidden[-1] if hidden else obs_dim
        self.mu = nn.Linear(width, action_dim)
        self.log_std = nn.Linear(width, action_dim)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                _default_init(module, generator)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``obs: [..., obs_dim]`` -> ``(mean, std)``, each ``[..., D]``."""
        features = self.trunk(obs)
        return self.mu(features), torch.exp(self.log_std(features))

    def sample(
        self, obs: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reparameterized ``a = mu + std * eps``; returns ``(a, mu, std)``, each ``[..., D]``."""
        mean, std = self(obs)
        return mean + std * eps, mean, std

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``log pi(action | obs)``: ``[..., obs_dim], [..., D]`` -> ``[...]``."""
        mean, std = self(obs)
        return gaussian_log_prob(action, mean, std)


class Critic(nn.Module):
    """State-value MLP ``Linear-ELU-LayerNorm`` per hidden width, then ``Linear(., 1)``.

    Linear weights are orthogonal (gain 1), biases zero, as in the authors' code. The output is a
    *normalized* value; the owner un-normalizes it with its value statistics.
    """

    def __init__(self, obs_dim: int, hidden: Sequence[int], generator: torch.Generator) -> None:
        super().__init__()
        self.trunk = _trunk(obs_dim, hidden)
        self.head = nn.Linear(hidden[-1] if hidden else obs_dim, 1)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.orthogonal_(module.weight, generator=generator)
                nn.init.zeros_(module.bias)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs: [..., obs_dim]`` -> normalized value ``[...]``."""
        return self.head(self.trunk(obs)).squeeze(-1)
