"""The environment protocol that every task implements and every algorithm consumes.

An environment is a batch of ``num_envs`` independent worlds stepped together with torch ops. The
algorithms never know which task they train: they only see this protocol.

Conventions (gymnasium's "next-step" autoreset is *not* used; worlds reset in the same step):

* ``reset(seed=None) -> obs``: ``obs`` is ``[B, obs_dim]``.
* ``step(action) -> (obs, reward, terminated, truncated, info)`` with ``action: [B, action_dim]``
  in ``[-1, 1]``, ``reward: [B]``, ``terminated, truncated: [B]`` bool. A world whose episode ended
  in this step is reset immediately: its entry of ``obs`` is the first observation of the new
  episode and carries no gradient to the past. ``info["final_obs"]: [B, obs_dim]`` holds, for every
  world, the observation reached by this step (equal to ``obs`` where the episode goes on); it is
  autograd-connected to ``action`` and is what bootstrapping and GAE use.
* ``reward`` and ``info["final_obs"]`` are differentiable with respect to ``action`` (and to the
  state the step started from) when the step runs with autograd enabled.
* ``detach()`` cuts the autograd graph to everything before the current state; trainers call it at
  the start of every short-horizon rollout window.
* ``terminated`` means a true end of the task (no bootstrap); ``truncated`` means a time limit
  (the critic bootstraps from ``info["final_obs"]``).

Optional: ``state_dict() -> dict`` and ``load_state_dict(dict)`` make resumed training exact for
stateful environments; without them a resumed run starts fresh episodes. ``log_metrics() ->
dict[str, float]`` returns counters accumulated since its last call (the same keys every time,
namespaced like ``"physics/..."``); the trainer adds them to every epoch's log row.
``vectorized_backward: bool`` (``True`` when absent) says whether the step's backward runs under
vmap; set it ``False`` when the step is a kernel torch cannot batch (Newton's), and algorithms that
take several gradients of one rollout (LR+RP, PE) take them one backward pass at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["VecEnv", "check_action", "check_env_sizes", "check_physical_parameters"]


@runtime_checkable
class VecEnv(Protocol):
    """A batched, differentiable environment (see the module docstring for the conventions)."""

    num_envs: int
    obs_dim: int
    action_dim: int
    max_episode_steps: int

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Start new episodes in every world; return ``obs: [B, obs_dim]``."""
        ...

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Advance every world by one step; see the module docstring for the returned tuple."""
        ...

    def detach(self) -> None:
        """Cut the autograd graph at the current state."""
        ...


def check_action(action: torch.Tensor, num_envs: int, action_dim: int) -> None:
    """Raise ``ValueError`` unless ``action`` is a finite ``[num_envs, action_dim]`` tensor."""
    expected = (num_envs, action_dim)
    if tuple(action.shape) != expected:
        raise ValueError(
            f"action has shape {tuple(action.shape)}; expected {expected} (num_envs, action_dim)"
        )
    if not bool(torch.isfinite(action).all()):
        raise ValueError("action contains NaN or inf; every entry must be finite in [-1, 1]")


def check_env_sizes(num_envs: int, max_episode_steps: int) -> None:
    """Raise ``ValueError`` naming the value unless ``num_envs`` and ``max_episode_steps`` are
    both >= 1."""
    for name, value in (("num_envs", num_envs), ("max_episode_steps", max_episode_steps)):
        if value < 1:
            raise ValueError(f"{name}={value!r} is invalid; valid range: >= 1")


def check_physical_parameters(
    params: Any, positive: Iterable[str], non_negative: Iterable[str]
) -> None:
    """Raise ``ValueError`` naming the field and its valid range unless every attribute of
    ``params`` named in ``positive`` is finite and > 0, every one in ``non_negative`` finite and
    >= 0, and ``params.substeps`` an integer >= 1."""
    for names, bound in ((positive, "> 0"), (non_negative, ">= 0")):
        for name in names:
            value = getattr(params, name)
            if not (math.isfinite(value) and (value > 0 if bound == "> 0" else value >= 0)):
                raise ValueError(f"{name}={value!r} is invalid; valid range: finite and {bound}")
    substeps = params.substeps
    if int(substeps) != substeps or substeps < 1:
        raise ValueError(f"substeps={substeps!r} is invalid; valid range: integer >= 1")
