"""Several gradients of one autograd graph: the per-sample gradients of LR+RP's variance estimate
and PE's per-step action gradients.

Each gradient of a rollout's graph is a backward pass through the whole differentiable
simulation, so taking K of them one by one costs K passes of Python-dispatched kernels. With
``vectorize=True`` the K passes run as one batched pass (torch's ``is_grads_batched``, a vmap over
the backward), 2-4x faster on the traffic and Cartpole rollouts and identical in value. A graph
that contains a kernel vmap cannot batch (Newton's :class:`torch.autograd.Function`) needs
``vectorize=False``; environments say which through ``VecEnv.vectorized_backward``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["row_gradients"]


def row_gradients(
    rows: torch.Tensor, inputs: Sequence[torch.Tensor], vectorize: bool
) -> list[torch.Tensor]:
    """Gradients of every scalar ``rows[k].sum()`` with respect to every input.

    Args:
        rows: ``[K, ...]`` graph-attached outputs; row ``k`` (summed) is the k-th scalar.
        inputs: tensors in the graph of ``rows``.
        vectorize: one batched backward pass instead of ``K`` passes (see the module docstring).

    Returns:
        One ``[K, *input.shape]`` tensor per input (zeros where a row does not depend on the
        input). The graph is retained, so it can be differentiated again.
    """
    count = rows.shape[0]
    if vectorize:
        selectors = torch.eye(count, device=rows.device, dtype=rows.dtype)
        selectors = selectors.reshape(count, count, *([1] * (rows.dim() - 1))).expand(
            count, *rows.shape
        )
        grads = torch.autograd.grad(
            rows,
            inputs,
            grad_outputs=selectors,
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=True,
        )
        return [
            torch.zeros(count, *x.shape, device=x.device, dtype=x.dtype) if g is None else g
            for g, x in zip(grads, inputs, strict=True)
        ]
    per_row = [
        torch.autograd.grad(rows[k].sum(), inputs, retain_graph=True, allow_unused=True)
        for k in range(count)
    ]
    return [
        torch.stack([torch.zeros_like(x) if row[i] is None else row[i] for row in per_row])
        for i, x in enumerate(inputs)
    ]
