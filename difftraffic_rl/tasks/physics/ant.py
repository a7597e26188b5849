"""Ant of the SHAC benchmark (Xu et al. 2022, DiffRL), on the Newton engine.

A four-legged robot (``assets/ant.xml``: sphere torso, eight hinges) must run along +x. The
definitions are the benchmark's ``AntEnv``:

* Physics (its dflex loader): density 1000 kg/m^3; ground contact ke 4e4 N/m, kd 1e4 N s/m,
  kf 3e3 N s/m, mu 0.75; joint limits ke 1e3 N m/rad, always-on damping kd 10 N m s/rad plus
  joint damping 1 N m s/rad on the hinges; armature 0.05 on every degree of freedom; torques
  ``200 N m * clip(action, -1, 1)`` on the eight hinges; control step 1/60 s of 16 substeps.
  The semi-implicit solver's joint springs are 3e4 N/m, 1e3 N s/m: stiffer ones chatter or blow
  up at 16 substeps (see below), and Newton's default 1e4 lets the unactuated ant sink at once.
* Start: torso at 0.75 m, upright, hinges at ``(0, 1, 0, -1, 0, -1, 0, 1)`` rad, at rest. With
  ``stochastic_init`` (the benchmark's training setting): torso position +-0.1 m per axis, a
  rotation of up to +-pi/24 rad about a random axis, hinges +-0.2 rad, every velocity +-0.25.
* Observation ``[B, 37]``: torso height (m), torso quaternion ``x, y, z, w`` (4), torso linear
  (3, m/s) and angular (3, rad/s) velocity in the world frame, hinge angles (8, rad), 0.1 x hinge
  velocities (8), the z component of the torso's up axis, the cosine between the torso's
  forward axis and the horizontal direction to a target 10 km ahead, and the last actions (8).
* Reward: ``v_x + 0.1 up_z + heading + (height - 0.27)``; the episode ends early when the torso
  is below 0.27 m, and after 1000 steps.

Without actions the Ant does not stay on its legs, on either solver, and should not with the
benchmark's parameters (dflex has the same masses, limit law and contact law; it was not run
here). The robot weighs 182 kg (density 1000 kg/m^3; the torso alone 97 kg), so each ankle must
carry about 190 N m; the hips, about vertical axes, carry none. The ankle limit spring
(1e3 N m/rad) gives that only about 11 deg past the 30 deg limit, where the torso (a sphere of
radius 0.25 m) already touches the ground: it rests at 0.24-0.25 m, below the termination height.
Friction delays the fall, since the regularized friction (``kf``) lets the feet creep outwards.
Measured from the deterministic start (torso height at 0.5 / 1 / 1.5 / 2 s; largest ankle
violation): semi-implicit 0.49 / 0.43 / 0.26 / 0.25 m, 10 deg; Featherstone 0.52 / 0.49 / 0.45 /
0.25 m, 12 deg; hips within their limits on both. With start noise (16 worlds) the median time
to termination is 0.9 s (semi-implicit) and 1.7 s (Featherstone): the semi-implicit solver's
joint springs give under the load and are integrated coarsely. 32 substeps give 1.3 s, 32
substeps with 1e5 N/m springs 1.5 s, both at twice the cost; 1e5 N/m at 16 substeps twists the
hips 14 deg past their limits. The defaults stay 3e4 N/m at 16 substeps.
With 10x stiffer limit springs (not the benchmark's) the unactuated Ant stays on its legs
(0.31-0.36 m), which shows that the limits act, with the right sign and unit, and that the fall
is the benchmark's stiffness.

Difference from the benchmark: dflex simulated y-up and rotated the robot; Newton is z-up, so
the torso quaternion of the upright start is the identity here (the benchmark observed that
rotation composed with it). The numbers are not bit-identical (another engine, see
:mod:`~difftraffic_rl.tasks.physics.newton_sim` for how parameters map).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from difftraffic_rl.tasks.physics.locomotion import LocomotionEnv, quat_rotate
from difftraffic_rl.tasks.physics.newton_sim import ArticulationPhysics

__all__ = ["ANT_PHYSICS", "AntEnv"]

ANT_PHYSICS = ArticulationPhysics(
    asset="ant.xml",
    density=1000.0,
    contact_ke=4.0e4,
    contact_kd=1.0e4,
    contact_kf=3.0e3,
    contact_mu=0.75,
    limit_ke=1.0e3,
    limit_kd=10.0,
    joint_damping=1.0,
    armature=0.05,
    joint_attach_ke=3.0e4,
    joint_attach_kd=1.0e3,
)
"""The benchmark's Ant parameters (its ``parse_mjcf`` call)."""

START_HEIGHT = 0.75
"""Torso height at the start (m)."""
START_HINGES = (0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0, 1.0)
"""Hinge angles at the start (rad): hips straight, ankles bent 1 rad towards the ground."""
TERMINATION_HEIGHT = 0.27
"""The episode ends when the torso is lower (m); also the zero of the height reward."""
TARGET_DISTANCE = 1.0e4
"""Distance of the heading target ahead of the start, along +x (m)."""
JOINT_VELOCITY_SCALE = 0.1
"""Scale of the hinge velocities in the observation."""


class AntEnv(LocomotionEnv):
    """``num_envs`` Ant worlds; see the module docstring and :class:`LocomotionEnv` for the
    arguments. Observations ``[B, 37]``, actions ``[B, 8]`` in ``[-1, 1]``."""

    obs_dim = 37
    action_dim = 8
    physics = ANT_PHYSICS

    def initial_states(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``[count, 15]`` coordinates (torso position, quaternion ``x, y, z, w``, 8 hinges) and
        ``[count, 14]`` velocities (torso linear, angular, 8 hinges)."""
        start = [0.0, 0.0, START_HEIGHT, 0.0, 0.0, 0.0, 1.0, *START_HINGES]
        joint_q = torch.tensor(start, device=self.device).expand(count, -1).clone()
        joint_qd = torch.zeros(count, self.sim.dofs, device=self.device)
        if self.stochastic_init:
            joint_q[:, :3] += self.uniform(count, 3, 0.1)
            angle = self.uniform(count, 1, math.pi / 24.0)
            axis = F.normalize(self.uniform(count, 3, 0.5), dim=-1)
            tilt = torch.cat((axis * torch.sin(angle / 2), torch.cos(angle / 2)), dim=-1)
            joint_q[:, 3:7] = tilt
            joint_q[:, 7:] += self.uniform(count, 8, 0.2)
            joint_qd += self.uniform(count, self.sim.dofs, 0.25)
        return joint_q, joint_qd

    def observe(
        self, joint_q: torch.Tensor, joint_qd: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """``[B, 37]``, see the module docstring."""
        torso_pos, torso_rot = joint_q[:, :3], joint_q[:, 3:7]
        to_target = torch.stack(
            (
                TARGET_DISTANCE - torso_pos[:, 0],
                -torso_pos[:, 1],
                torch.zeros_like(torso_pos[:, 0]),
            ),
            dim=-1,
        )
        target_dir = F.normalize(to_target, dim=-1)
        unit_x = torch.zeros_like(torso_pos)
        unit_x[:, 0] = 1.0
        unit_z = torch.zeros_like(torso_pos)
        unit_z[:, 2] = 1.0
        up = quat_rotate(torso_rot, unit_z)
        heading = quat_rotate(torso_rot, unit_x)
        return torch.cat(
            (
                torso_pos[:, 2:3],
                torso_rot,
                joint_qd[:, :6],
                joint_q[:, 7:],
                JOINT_VELOCITY_SCALE * joint_qd[:, 6:],
                up[:, 2:3],
                (heading * target_dir).sum(-1, keepdim=True),
                actions,
            ),
            dim=-1,
        )

    def reward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``v_x + 0.1 up_z + heading + (height - 0.27)`` ``[B]`` (no action penalty)."""
        return obs[:, 5] + 0.1 * obs[:, 27] + obs[:, 28] + (obs[:, 0] - TERMINATION_HEIGHT)

    def fallen(self, obs: torch.Tensor) -> torch.Tensor:
        """Torso below 0.27 m."""
        return obs[:, 0] < TERMINATION_HEIGHT
