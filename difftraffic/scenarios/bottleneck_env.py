"""The lane-drop bottleneck with automated cars as environments: batched torch
(:class:`BottleneckEnv`), and one world with numpy in and out for
``gymnasium.make("difftraffic/Bottleneck-v0")`` (:class:`BottleneckGymEnv`)."""

from __future__ import annotations

from typing import Any

import torch

from difftraffic.env import SingleWorldGymEnv, TrafficEnv
from difftraffic.scenarios.bottleneck import BottleneckTask

__all__ = ["BottleneckEnv", "BottleneckGymEnv", "make_bottleneck_vector_env"]


class BottleneckEnv(TrafficEnv):
    """Automated cars among human drivers merging at a lane drop, ``num_envs`` worlds.

    Args:
        num_envs: number of worlds.
        task_kwargs: arguments of :class:`difftraffic.scenarios.bottleneck.BottleneckTask`
            (``config``, ``humans_per_lane``, ``autonomous``, ``max_episode_steps``, ...).
        **kwargs: passed to :class:`TrafficEnv` (seed, device, dtype, render_mode, ...).
    """

    def __init__(
        self, num_envs: int = 1, task_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(BottleneckTask(**(task_kwargs or {})), num_envs, **kwargs)


def make_bottleneck_vector_env(
    num_envs: int = 1, as_numpy: bool = True, **kwargs: Any
) -> BottleneckEnv:
    """``vector_entry_point`` of ``difftraffic/Bottleneck-v0``: numpy by default."""
    return BottleneckEnv(num_envs, as_numpy=as_numpy, **kwargs)


class BottleneckGymEnv(SingleWorldGymEnv):
    """One bottleneck world for ``gymnasium.make`` (float32 observations, simulated in
    float64)."""

    def __init__(
        self, render_mode: str | None = None, task_kwargs: dict[str, Any] | None = None
    ) -> None:
        vector_env = BottleneckEnv(1, task_kwargs, render_mode=render_mode, dtype=torch.float64)
        super().__init__(vector_env, render_mode)
