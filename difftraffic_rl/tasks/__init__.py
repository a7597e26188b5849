"""Task registry: a task is a named factory that builds a :class:`~difftraffic_rl.envs.VecEnv`.

Factories are stored as ``"module:attribute"`` strings and imported only when a task is made, so
``import difftraffic_rl`` stays cheap and a task family (for example traffic, which needs the
``difftraffic`` simulator) can join the registry without being imported by the others.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from difftraffic_rl.envs import VecEnv

__all__ = ["TaskSpec", "available_tasks", "make_task", "register_task", "task_spec"]


@dataclass(frozen=True)
class TaskSpec:
    """A registered task.

    Attributes:
        name: the id users type (``--task NAME``).
        entry_point: ``"module:attribute"`` of a callable
            ``(num_envs, device, dtype, **kwargs) -> VecEnv``.
        kwargs: keyword arguments that define this task (e.g. the function and its dimension).
        description: one line shown by ``difftraffic-rl list``.
    """

    name: str
    entry_point: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(name: str, entry_point: str, description: str = "", **kwargs: Any) -> TaskSpec:
    """Register a task under ``name``; raise ``ValueError`` if the name is taken."""
    if name in _REGISTRY:
        raise ValueError(f"task name {name!r} is already registered; choose another name")
    if ":" not in entry_point:
        raise ValueError(f"entry_point {entry_point!r} must look like 'package.module:callable'")
    spec = TaskSpec(name, entry_point, dict(kwargs), description)
    _REGISTRY[name] = spec
    return spec


def available_tasks() -> list[str]:
    """Names of all registered tasks, sorted."""
    return sorted(_REGISTRY)


def task_spec(name: str) -> TaskSpec:
    """The registration of task ``name``; ``ValueError`` naming the registered ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; registered tasks: {available_tasks()}")
    return _REGISTRY[name]


def make_task(
    name: str,
    num_envs: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    **overrides: Any,
) -> VecEnv:
    """Build ``num_envs`` parallel worlds of the task ``name`` on ``device`` with ``dtype``.

    ``overrides`` replace the registered keyword arguments of the task.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; registered tasks: {available_tasks()}")
    if num_envs < 1:
        raise ValueError(f"num_envs={num_envs} must be >= 1")
    spec = _REGISTRY[name]
    module_name, attribute = spec.entry_point.split(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    accepted = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = sorted(k for k in overrides if k not in accepted and not takes_any)
    if unknown:
        valid = sorted(k for k in accepted if k not in ("self", "num_envs", "device", "dtype"))
        raise ValueError(f"task {name!r} has no setting {unknown} (task_kwargs); valid: {valid}")
    return factory(num_envs=num_envs, device=device, dtype=dtype, **{**spec.kwargs, **overrides})


_FUNCTION_OPTIMIZATION = "difftraffic_rl.tasks.function_optimization:FunctionOptimizationEnv"
for _dim, _suffix in ((1, ""), (64, "64")):
    register_task(
        f"dejong{_suffix}",
        _FUNCTION_OPTIMIZATION,
        description=f"maximize -sum(x^2), x = 5.12 * action, {_dim}-D (paper 7.5.1)",
        function="dejong",
        dim=_dim,
    )
    register_task(
        f"ackley{_suffix}",
        _FUNCTION_OPTIMIZATION,
        description=f"maximize -Ackley(x), x = 32.768 * action, {_dim}-D (paper 7.5.1)",
        function="ackley",
        dim=_dim,
    )

for _variant in ("1lane", "2lane", "3lane", "4lane", "10lane"):
    register_task(
        f"pacecar-{_variant}",
        "difftraffic_rl.tasks.traffic:PaceCarVecEnv",
        description=f"pace car holding IDM drivers to 10 m/s, variant {_variant} (paper 7.5.2)",
        variant=_variant,
    )

register_task(
    "ring",
    "difftraffic_rl.tasks.traffic:RingVecEnv",
    description="one automated car damping stop-and-go waves among 21 IDM drivers on the "
    "Sugiyama ring (230 m)",
)

register_task(
    "cartpole",
    "difftraffic_rl.tasks.physics.cartpole:CartPoleSwingUpEnv",
    description="cart-pole swing-up of the SHAC benchmark, 240 steps of 1/60 s (paper 7.4.2)",
)

for _robot, _summary in (
    ("ant", "four-legged Ant running along +x"),
    ("hopper", "planar one-legged Hopper hopping along +x"),
):
    register_task(
        _robot,
        f"difftraffic_rl.tasks.physics.{_robot}:{_robot.capitalize()}Env",
        description=f"{_summary} of the SHAC benchmark on Newton, 1000 steps of 1/60 s "
        "(paper 7.4.2; needs difftraffic[physics])",
        solver="semi_implicit",
    )
