"""Running mean / variance of a stream of batches (parallel-variance update, as in rl_games).

Kept as an ``nn.Module`` with buffers so that ``.to(device)``, ``state_dict`` and checkpoints
handle it like the networks.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RunningMeanStd"]


class RunningMeanStd(nn.Module):
    """Running statistics of vectors of shape ``shape``.

    Args:
        shape: shape of one sample (``()`` for scalars).
        epsilon: initial pseudo-count, so the first update is not divided by zero.
        var_floor: added to the variance before taking the square root in ``normalize``.
        device, dtype: where the statistics live.
    """

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(
        self,
        shape: tuple[int, ...] = (),
        epsilon: float = 1e-4,
        var_floor: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.var_floor = var_floor
        self.register_buffer("mean", torch.zeros(shape, device=device, dtype=dtype))
        self.register_buffer("var", torch.ones(shape, device=device, dtype=dtype))
        self.register_buffer("count", torch.tensor(epsilon, device=device, dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        """Fold ``batch: [M, *shape]`` (any leading size M >= 1) into the statistics."""
        batch = batch.detach().reshape(-1, *self.mean.shape).to(self.mean.dtype)
        batch_count = batch.shape[0]
        batch_mean = batch.mean(dim=0)
        batch_var = batch.var(dim=0, unbiased=False)
        total = self.count + batch_count
        delta = batch_mean - self.mean
        new_mean = self.mean + delta * (batch_count / total).to(self.mean.dtype)
        m2 = (
            self.var * self.count.to(self.var.dtype)
            + batch_var * batch_count
            + delta.square() * (self.count * batch_count / total).to(self.var.dtype)
        )
        self.mean.copy_(new_mean)
        self.var.copy_(m2 / total.to(self.var.dtype))
        self.count.copy_(total)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / sqrt(var + var_floor)``, differentiable in ``x``."""
        return (x - self.mean) / torch.sqrt(self.var + self.var_floor)

    def unnormalize(self, y: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`: ``y * sqrt(var + var_floor) + mean``."""
        return y * torch.sqrt(self.var + self.var_floor) + self.mean
