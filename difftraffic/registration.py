"""Gymnasium registration of the pace-car and ring environments."""

from __future__ import annotations

import gymnasium

from difftraffic.scenarios.pace_car import PACE_CAR_VARIANTS


def env_id(variant: str) -> str:
    """The registered id of a pace-car variant, e.g. ``difftraffic/PaceCar-2lane-v0``."""
    return f"difftraffic/PaceCar-{variant}-v0"


RING_ENV_ID = "difftraffic/Ring-v0"
"""Mixed autonomy on the Sugiyama ring (:class:`difftraffic.scenarios.ring.RingTask`)."""

BOTTLENECK_ENV_ID = "difftraffic/Bottleneck-v0"
"""Automated cars at a lane drop (:class:`difftraffic.scenarios.bottleneck.BottleneckTask`)."""


def register_envs() -> None:
    """Register every pace-car variant, the ring and the bottleneck (idempotent)."""
    for env, module, name in (
        (RING_ENV_ID, "ring_env", "ring"),
        (BOTTLENECK_ENV_ID, "bottleneck_env", "bottleneck"),
    ):
        if env in gymnasium.registry:
            continue
        gymnasium.register(
            id=env,
            entry_point=f"difftraffic.scenarios.{module}:{name.capitalize()}GymEnv",
            vector_entry_point=f"difftraffic.scenarios.{module}:make_{name}_vector_env",
            max_episode_steps=None,
        )
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
