"""The pace-car problem as environments: batched torch (:class:`PaceCarEnv`), and one world with
numpy in and out for ``gymnasium.make`` (:class:`PaceCarGymEnv`)."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from torch import Tensor

from difftraffic.env import TrafficEnv
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


class PaceCarGymEnv(gymnasium.Env):
    """One pace-car world with numpy observations, for ``gymnasium.make``.

    Observations are float32; the world is simulated in float64 for exact repeatability.

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
        self.vector_env = PaceCarEnv(
            variant, 1, config_overrides, render_mode=render_mode, dtype=torch.float64
        )
        self.metadata = {**self.metadata, "render_fps": self.vector_env.metadata["render_fps"]}
        self.render_mode = render_mode
        self.observation_space = self.vector_env.single_observation_space
        self.action_space = self.vector_env.single_action_space
        self._last_frame: np.ndarray | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is None and self.vector_env.state is None:
            seed = int(self.np_random.integers(2**31))
        obs, _ = self.vector_env.reset(seed=seed)
        return self._obs(obs), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        batched = torch.as_tensor(np.asarray(action, dtype=np.float64)).reshape(1, -1)
        with torch.no_grad():
            obs, reward, terminated, truncated, info = self.vector_env.step(batched)
        if bool(info["_final_obs"][0]):
            # A single Gymnasium env ends its episode here: the user must call reset().
            obs = info["final_obs"]
            self.vector_env.state = None
        reasons = {key: bool(value[0]) for key, value in info.items() if not key.endswith("obs")}
        return self._obs(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]), reasons

    def render(self) -> np.ndarray | None:
        """The world as ``[H, W, 3]`` uint8 RGB (``render_mode="rgb_array"``) or shown in a
        window (``"human"``, returns ``None``). After the step that ends an episode the world
        is gone until ``reset()``, so this repeats the episode's last rendered frame."""
        if self.vector_env.state is None and self._last_frame is not None:
            return self._last_frame
        self._last_frame = self.vector_env.render()
        return self._last_frame

    def close(self) -> None:
        """Close the render window, if one is open."""
        self.vector_env.close()

    def _obs(self, obs: Tensor) -> np.ndarray:
        single: np.ndarray = obs[0].detach().cpu().numpy().astype(np.float32)
        return single
