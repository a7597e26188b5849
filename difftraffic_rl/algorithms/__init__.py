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
    "register_algorithm",
    "sweep_algorithms",
]

ALGORITHMS: dict[str, type[Algorithm]] = {}
"""The registry: every name the CLI, the sweeps and the benchmarks accept."""


def register_algorithm(cls: type[Algorithm]) -> type[Algorithm]:
    """Add ``cls`` to :data:`ALGORITHMS` under ``cls.name`` (usable as a class decorator)."""
    if cls.name in ALGORITHMS and ALGORITHMS[cls.name] is not cls:
        raise ValueError(f"an algorithm named {cls.name!r} is already registered")
    ALGORITHMS[cls.name] = cls
    return cls


for _cls in (GIPPO, PPO, LR, RP, LRP, PE):
    register_algorithm(_cls)


def sweep_algorithms() -> list[str]:
    """The algorithms a sweep runs on every task by default, in registry order."""
    return [name for name, cls in ALGORITHMS.items() if cls.every_task]


def get_algorithm(name: str) -> type[Algorithm]:
    """The algorithm class registered as ``name``."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; valid names: {sorted(ALGORITHMS)}")
    return ALGORITHMS[name]
