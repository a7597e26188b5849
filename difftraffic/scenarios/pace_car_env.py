"""The pace-car problem as environments: batched torch (:class:`PaceCarEnv`), and one world with
numpy in and out for ``gymnasium.make`` (:class:`PaceCarGymEnv`)."""

from __future__ import annotations

from typing import Any

import torch

from difftraffic.env import SingleWorldGymEnv, TrafficEnv
from difftraffic.render.renderer import RENDER_MODES
from difftraffic.scenarios.pace_car import PaceCarConfig, PaceCarTask, pace_car_config

__all__ = ["PaceCarEnv", "PaceCarGymEnv", "make_pace_car_vector_env"]


class PaceCarEnv(TrafficEnv):
    """The pace-car problem as a batched torch environment.

    Args:
        variant: ``1lane``, ``2lane``, ``3lane``, ``4lane`` or ``10lane``.
        num_envs: number of worlds.
        config_overrides: :class:`difftraffic.scenarios.PaceCarConfig` fields to override
            (e.g. ``{"target_speed": 12.0}``).
        **kwargs: passed to :class:`TrafficEnv` (seed, device, dtype, render_mode, ...).
    """

    def __init__(
        self,
        variant: str = "1lane",
        num_envs: int = 1,
        config_overrides: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.variant = variant
        task = PaceCarTask(pace_car_config(variant, **(config_overrides or {})))
        super().__init__(task, num_envs, **kwargs)


def make_pace_car_vector_env(
    variant: str = "1lane", num_envs: int = 1, as_numpy: bool = True, **kwargs: Any
) -> PaceCarEnv:
    """``vector_entry_point`` of the registered ids: numpy by default, as Gymnasium users expect."""
    return PaceCarEnv(variant, num_envs, as_numpy=as_numpy, **kwargs)


class PaceCarGymEnv(SingleWorldGymEnv):
    """One pace-car world with numpy observations, for ``gymnasium.make`` (float32
    observations, simulated in float64).

    Args:
        variant: the pace-car variant.
        render_mode: ``"rgb_array"``, ``"human"`` or ``None``.
        config_overrides: :class:`difftraffic.scenarios.PaceCarConfig` fields to override.
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": round(1.0 / PaceCarConfig.dt)}

    def __init__(
        self,
        variant: str = "1lane",
        render_mode: str | None = None,
        config_overrides: dict[str, Any] | None = None,
    ) -> None:
        vector_env = PaceCarEnv(
            variant, 1, config_overrides, render_mode=render_mode, dtype=torch.float64
        )
        super().__init__(vector_env, render_mode)
