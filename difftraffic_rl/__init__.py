"""difftraffic_rl: gradient-informed policy learning (GI-PPO) and its baselines.

``import difftraffic_rl`` is cheap: torch and the algorithms load on first use of the names
below. ``difftraffic_rl.train(task=..., algo=..., seed=...)`` trains from Python; the
``difftraffic-rl`` command does the same from a shell.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["available_tasks", "evaluate", "make_task", "register_task", "resume", "train"]

_LAZY = {
    "train": "difftraffic_rl.training",
    "resume": "difftraffic_rl.training",
    "evaluate": "difftraffic_rl.training",
    "make_task": "difftraffic_rl.tasks",
    "register_task": "difftraffic_rl.tasks",
    "available_tasks": "difftraffic_rl.tasks",
}

if TYPE_CHECKING:
    from difftraffic_rl.tasks import available_tasks, make_task, register_task
    from difftraffic_rl.training import evaluate, resume, train


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'difftraffic_rl' has no attribute {name!r}")
