"""One contiguous buffer for a module's parameters and one for their gradients.

The paper's networks are tiny (two hidden layers of 32), so an epoch's ~100 sequential Adam steps
cost what their *kernel launches* cost: per-tensor Adam, NaN scrubbing and norm clipping run a
dozen ops on each of ten tensors. Laying the parameters out in one buffer makes each of those a
single op on one tensor. Adam, ``nan_to_num`` and the clip multiply are elementwise, and the
clip norm is the norm of the per-tensor norms as :func:`torch.nn.utils.clip_grad_norm_` computes
it (:func:`torch.nn.utils.get_total_norm`), so training follows the same arithmetic as with
per-tensor parameters (bit-identical curves, checked on every algorithm).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FlatParameters"]


class FlatParameters:
    """Re-home every parameter of ``module`` into ``self.flat`` (and its gradient into
    ``self.flat.grad``) as views, so the module keeps working unchanged.

    Gradients are never set to ``None``: autograd accumulates into the existing ``.grad`` views
    in place, and :meth:`zero_grad` clears them with one op. Build optimizers over
    ``[self.flat]``. Move the module (``.to``) *before* flattening; moving it afterwards would
    silently detach the parameters from the buffer.

    Args:
        module: the module whose parameters (in ``module.parameters()`` order) are flattened.
    """

    def __init__(self, module: nn.Module) -> None:
        self.tensors = list(module.parameters())
        if not self.tensors:
            raise ValueError(f"{type(module).__name__} has no parameters to flatten")
        requires_grad = self.tensors[0].requires_grad
        flat = torch.cat([p.detach().reshape(-1) for p in self.tensors])
        self.flat = nn.Parameter(flat, requires_grad=requires_grad)
        self.flat.grad = torch.zeros_like(flat)
        self.grads: list[torch.Tensor] = []
        offset = 0
        with torch.no_grad():
            for p in self.tensors:
                # set_ points the same Parameter object at its stretch of the flat storage, so
                # the module, its state_dict and any hooks keep referring to it.
                p.set_(self.flat.untyped_storage(), offset, p.shape, p.stride())
                p.grad = self.flat.grad[offset : offset + p.numel()].view_as(p)
                self.grads.append(p.grad)
                offset += p.numel()

    def adam(self, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
        """Adam over the flat buffer.

        Not ``fused``: the fused kernel rounds differently (curves change from the first
        epoch) for a few percent of an epoch.
        """
        return torch.optim.Adam([self.flat], lr=lr, betas=betas)

    @property
    def grad(self) -> torch.Tensor:
        """The gradient buffer ``[P]``."""
        assert self.flat.grad is not None
        return self.flat.grad

    def zero_grad(self) -> None:
        """Zero every gradient in place (the views stay attached)."""
        self.grad.zero_()

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> None:
        """Scale the gradients so their global 2-norm is at most ``max_norm``.

        Same arithmetic as :func:`torch.nn.utils.clip_grad_norm_` (the norm of the per-tensor
        norms, ``min(max_norm / (norm + 1e-6), 1)``), in a few ops on the flat buffer.
        """
        # Per-tensor norms as get_total_norm takes them, without its per-call regrouping by
        # device and dtype (25 µs, as much as the norms themselves on these tiny networks).
        norms = [torch.linalg.vector_norm(g) for g in self.grads]
        total = torch.linalg.vector_norm(torch.stack(norms))
        self.grad.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
