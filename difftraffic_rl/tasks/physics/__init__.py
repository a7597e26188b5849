"""Differentiable physics tasks of the SHAC benchmark (paper appendix 7.4.2): Cartpole swing-up
in plain torch. Ant and Hopper (on the Newton engine) are not here yet."""

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
