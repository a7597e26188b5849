"""Differentiable physics tasks of the SHAC benchmark (paper appendix 7.4.2): Cartpole swing-up
in plain torch; Ant and Hopper on the Newton engine (:mod:`.ant`, :mod:`.hopper`, made through
the task registry and not imported here, so that this package works without the optional
``difftraffic[physics]`` dependencies)."""

from difftraffic_rl.tasks.physics.cartpole import (
    CartPoleParams,
    CartPoleSwingUpEnv,
    cartpole_energy,
    cartpole_observation,
    cartpole_reward,
    cartpole_step,
)

__all__ = [
    "CartPoleParams",
    "CartPoleSwingUpEnv",
    "cartpole_energy",
    "cartpole_observation",
    "cartpole_reward",
    "cartpole_step",
]
