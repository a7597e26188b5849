"""The algorithms by name: ``lr``, ``rp``, ``lrp`` (LR+RP), ``ppo``, ``gippo``, ``pe``."""

from __future__ import annotations

from difftraffic_rl.algorithms.base import Algorithm, AlgorithmConfig
from difftraffic_rl.algorithms.gippo import GIPPO, GIPPOConfig
from difftraffic_rl.algorithms.lr import LR, LRConfig
from difftraffic_rl.algorithms.lrp import LRP, LRPConfig
from difftraffic_rl.algorithms.pe import PE, PEConfig
from difftraffic_rl.algorithms.ppo import PPO, PPOConfig
from difftraffic_rl.algorithms.rp import RP, RPConfig

__all__ = [
    "ALGORITHMS",
    "GIPPO",
    "LR",
    "LRP",
    "PE",
    "PPO",
    "RP",
    "Algorithm",
    "AlgorithmConfig",
    "GIPPOConfig",
    "LRConfig",
    "LRPConfig",
    "PEConfig",
    "PPOConfig",
    "RPConfig",
    "get_algorithm",
]

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (LR, RP, LRP, PPO, GIPPO, PE)}


def get_algorithm(name: str) -> type[Algorithm]:
    """The algorithm class registered as ``name``."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; valid names: {sorted(ALGORITHMS)}")
    return ALGORITHMS[name]
