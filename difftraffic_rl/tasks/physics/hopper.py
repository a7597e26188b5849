"""Hopper of the SHAC benchmark (Xu et al. 2022, DiffRL), on the Newton engine.

A planar one-legged robot (``assets/hopper.xml``) must hop along +x. Its root is three joints at
the torso centre: slide ``x``, slide ``z`` (0 at the start height 1.25 m) and pitch; then the
thigh, leg and foot hinges. The definitions are the benchmark's ``HopperEnv``:

* Physics (its dflex loader): density 1000 kg/m^3; ground contact ke 2e4 N/m, kd 1e3 N s/m,
  kf 1e3 N s/m, mu 0.9; joint limits ke 1e3, always-on damping kd 10 on all six joints plus
  joint damping 2 N m s/rad on the three hinges; armature 1.0 on every degree of freedom;
  torques ``200 N m * clip(action, -1, 1)`` on the hinges; control step 1/60 s of 16 substeps.
  The semi-implicit solver's joint springs are 1e5 N/m, 1e3 N s/m: the unactuated hopper then
  rests where Featherstone's does (Newton's default 1e4 lets it sag 2 cm lower).
* Start: all six coordinates and velocities 0. With ``stochastic_init`` (the benchmark's training
  setting): ``x, z`` +-0.05 m, pitch +-0.05 rad, hinges +-0.05 rad, every velocity +-0.05.
* Observation ``[B, 11]``: ``z`` (m), pitch (rad), the three hinge angles (rad), then the six
  velocities (``x'``, ``z'`` in m/s, the rest in rad/s).
* Reward: ``x' + height + angle - 0.1 |action|^2`` with ``angle = 1 - (pitch / (pi/6))^2`` and
  ``height = clip(z + 0.3, -1, 0.3)``, squared and scaled by -200 where it is negative; the
  episode ends early when ``z < -0.45`` m (torso centre below 0.8 m), and after 1000 steps.

Without actions, from the exact upright start, the hopper balances (``z`` = -0.05 m, hinges at
most 0.1 deg past their limits) on both solvers; with start noise 9 of 16 worlds fall below the
termination height within 3 s on both, hinges at most 3.5 deg (semi-implicit) and 3.8 deg
(Featherstone) past their limits.

The numbers are not bit-identical to dflex (another engine; see
:mod:`~difftraffic_rl.tasks.physics.newton_sim` for how parameters map, in particular the
armature of the two root slides, which the semi-implicit solver does not model).
"""

from __future__ import annotations

import math

import torch

from difftraffic_rl.tasks.physics.locomotion import LocomotionEnv
from difftraffic_rl.tasks.physics.newton_sim import ArticulationPhysics

__all__ = ["HOPPER_PHYSICS", "HopperEnv"]

HOPPER_PHYSICS = ArticulationPhysics(
    asset="hopper.xml",
    density=1000.0,
    contact_ke=2.0e4,
    contact_kd=1.0e3,
    contact_kf=1.0e3,
    contact_mu=0.9,
    limit_ke=1.0e3,
    limit_kd=10.0,
    joint_damping=2.0,
    armature=1.0,
    joint_attach_ke=1.0e5,
    joint_attach_kd=1.0e3,
)
"""The benchmark's Hopper parameters (its ``parse_mjcf`` call)."""

TERMINATION_HEIGHT = -0.45
"""The episode ends when ``z`` is lower (m, relative to the start height 1.25 m)."""
HEIGHT_TOLERANCE = 0.15
"""The height reward is 0 at ``TERMINATION_HEIGHT + HEIGHT_TOLERANCE`` (m)."""
TERMINATION_ANGLE = math.pi / 6.0
"""Pitch at which the angle reward reaches 0 (rad)."""
ACTION_PENALTY = 0.1
"""Weight of ``|action|^2`` in the reward."""


class HopperEnv(LocomotionEnv):
    """``num_envs`` Hopper worlds; see the module docstring and :class:`LocomotionEnv` for the
    arguments. Observations ``[B, 11]``, actions ``[B, 3]`` in ``[-1, 1]``."""

    obs_dim = 11
    action_dim = 3
    physics = HOPPER_PHYSICS

    def initial_states(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``[count, 6]`` coordinates ``(x, z, pitch, thigh, leg, foot)`` and their velocities."""
        joint_q = torch.zeros(count, self.sim.coords, device=self.device)
        joint_qd = torch.zeros(count, self.sim.dofs, device=self.device)
        if self.stochastic_init:
            joint_q += self.uniform(count, self.sim.coords, 0.05)
            joint_qd += self.uniform(count, self.sim.dofs, 0.05)
        return joint_q, joint_qd

    def observe(
        self, joint_q: torch.Tensor, joint_qd: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """``[B, 11] = (z, pitch, hinges, velocities)``; the actions are not observed."""
        return torch.cat((joint_q[:, 1:], joint_qd), dim=-1)

    def reward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """See the module docstring; ``[B]``, at most ``x' + 1.3``."""
        height = (obs[:, 0] - (TERMINATION_HEIGHT + HEIGHT_TOLERANCE)).clamp(-1.0, 0.3)
        height = torch.where(height < 0.0, -200.0 * height**2, height)
        angle = 1.0 - (obs[:, 1] / TERMINATION_ANGLE) ** 2
        return obs[:, 5] + height + angle - ACTION_PENALTY * (actions**2).sum(-1)

    def fallen(self, obs: torch.Tensor) -> torch.Tensor:
        """``z`` below -0.45 m."""
        return obs[:, 0] < TERMINATION_HEIGHT
