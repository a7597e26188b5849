"""Opt-in ``torch.compile`` of the simulation step.

:func:`difftraffic.dynamics.step` has no graph breaks, host synchronisations or data-dependent
Python branches, so it compiles to one graph per call signature. Compiling pays off for small
worlds, where eager execution is bound by per-operation overhead (about 4.5x faster for one world
of 10 vehicles on a 2-core CPU), and for gradients, whose backward graph is compiled too.

Compilation takes a few seconds per distinct call signature, and one step signature usually
needs several graphs: the first step (no neighbours passed) and the following ones, with and
without autograd recording, and with inputs that do or do not require gradients. Each new batch
size, vehicle count, road or ``dt`` compiles again (shapes are static); past
``torch._dynamo.config.recompile_limit`` graphs for ``step`` PyTorch falls back to eager
execution with a warning, so raise that limit when one process simulates many shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from difftraffic.dynamics import StepResult, step


def compile_step(**options: Any) -> Callable[..., StepResult]:
    """:func:`difftraffic.dynamics.step`, compiled; same arguments, results and gradients.

    Args:
        **options: extra keyword arguments of ``torch.compile`` (``mode``, ``backend``, ...).
            ``dynamic`` is ``False``: every shape gets its own specialised graph, which is
            what makes small worlds fast.

    Example::

        fast_step = compile_step()
        result = fast_step(state, road, drivers, dt, av_acceleration, av_steering, neighbors)
    """
    compiled: Callable[..., StepResult] = torch.compile(step, dynamic=False, **options)
    return compiled
