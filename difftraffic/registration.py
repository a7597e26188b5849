"""Gymnasium registration of the pace-car and ring environments."""

from __future__ import annotations

import gymnasium

from difftraffic.scenarios.pace_car import PACE_CAR_VARIANTS


def env_id(variant: str) -> str:
    """The registered id of a pace-car variant, e.g. ``difftraffic/PaceCar-2lane-v0``."""
    return f"difftraffic/PaceCar-{variant}-v0"


RING_ENV_ID = "difftraffic/Ring-v0"
"""Mixed autonomy on the Sugiyama ring (:class:`difftraffic.scenarios.ring.RingTask`)."""


def register_envs() -> None:
    """Register every pace-car variant and the ring (idempotent)."""
    if RING_ENV_ID not in gymnasium.registry:
        gymnasium.register(
            id=RING_ENV_ID,
            entry_point="difftraffic.scenarios.ring_env:RingGymEnv",
            vector_entry_point="difftraffic.scenarios.ring_env:make_ring_vector_env",
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
