"""Mixed autonomy on the Sugiyama ring as environments: batched torch (:class:`RingEnv`), and one
world with numpy in and out for ``gymnasium.make("difftraffic/Ring-v0")`` (:class:`RingGymEnv`)."""

from __future__ import annotations

from typing import Any

import torch

from difftraffic.env import SingleWorldGymEnv, TrafficEnv
from difftraffic.scenarios.ring import RingTask

__all__ = ["RingEnv", "RingGymEnv", "make_ring_vector_env"]


class RingEnv(TrafficEnv):
    """One automated car among 21 human drivers on the Sugiyama ring, ``num_envs`` worlds.

    Args:
        num_envs: number of worlds.
        task_kwargs: arguments of :class:`difftraffic.scenarios.ring.RingTask` (``config``,
            ``max_acceleration``, ``max_episode_steps``, ...).
        **kwargs: passed to :class:`TrafficEnv` (seed, device, dtype, render_mode, ...).
    """

    def __init__(
        self, num_envs: int = 1, task_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(RingTask(**(task_kwargs or {})), num_envs, **kwargs)


def make_ring_vector_env(num_envs: int = 1, as_numpy: bool = True, **kwargs: Any) -> RingEnv:
    """``vector_entry_point`` of ``difftraffic/Ring-v0``: numpy by default."""
    return RingEnv(num_envs, as_numpy=as_numpy, **kwargs)


class RingGymEnv(SingleWorldGymEnv):
    """One ring world for ``gymnasium.make`` (float32 observations, simulated in float64)."""

    def __init__(
        self, render_mode: str | None = None, task_kwargs: dict[str, Any] | None = None
    ) -> None:
        vector_env = RingEnv(1, task_kwargs, render_mode=render_mode, dtype=torch.float64)
        super().__init__(vector_env, render_mode)
