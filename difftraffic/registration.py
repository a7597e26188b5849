"""Gymnasium registration of the pace-car environments."""

from __future__ import annotations

import gymnasium

from difftraffic.scenarios.pace_car import PACE_CAR_VARIANTS


def env_id(variant: str) -> str:
    """The registered id of a pace-car variant, e.g. ``difftraffic/PaceCar-2lane-v0``."""
    return f"difftraffic/PaceCar-{variant}-v0"


def register_envs() -> None:
    """Register every pace-car variant (idempotent)."""
    for variant, _ in PACE_CAR_VARIANTS.items():
        if env_id(variant) in gymnasium.registry:
            continue
        gymnasium.register(
            id=env_id(variant),
            entry_point="difftraffic.scenarios.pace_car_env:PaceCarGymEnv",
            vector_entry_point="difftraffic.scenarios.pace_car_env:make_pace_car_vector_env",
            kwargs={"variant": variant},
            max_episode_steps=None,
        )
