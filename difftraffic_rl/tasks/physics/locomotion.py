"""The part Ant and Hopper share: a :class:`~difftraffic_rl.envs.VecEnv` over a Newton
articulation with joint torques as actions, early termination, same-step autoreset and seeded
start noise. A task supplies its robot (:class:`ArticulationPhysics`), start states,
observation, reward and fall test.

Shapes: ``B`` worlds, ``C`` joint coordinates, ``D`` degrees of freedom, ``A`` actions (the last
``A`` degrees of freedom are actuated), ``O`` observation size.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import torch
import torch.nn.functional as F

from difftraffic_rl.envs import check_action, check_env_sizes
from difftraffic_rl.tasks.physics.newton_sim import ArticulationPhysics, NewtonArticulation

__all__ = ["LocomotionEnv", "quat_rotate"]


def quat_rotate(quat: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """Rotate ``vector [B, 3]`` by the unit quaternions ``quat [B, 4]`` (``x, y, z, w``)."""
    imag, real = quat[:, :3], quat[:, 3:]
    twice_cross = 2.0 * torch.linalg.cross(imag, vector, dim=-1)
    return vector + real * twice_cross + torch.linalg.cross(imag, twice_cross, dim=-1)


class LocomotionEnv:
    """Base of the Newton locomotion tasks (a :class:`~difftraffic_rl.envs.VecEnv`).

    Subclasses set ``obs_dim``, ``action_dim``, ``physics`` (the benchmark's
    :class:`ArticulationPhysics`) and implement :meth:`initial_states`, :meth:`observe`,
    :meth:`reward` and :meth:`fallen`.

    Args:
        num_envs: parallel worlds ``B`` (>= 1).
        device: where the state lives (the Newton model runs on the matching Warp device).
        dtype: must be ``torch.float32`` (Newton simulates in single precision).
        seed: seed of the start-noise generator; ``reset(seed)`` re-seeds it.
        max_episode_steps: steps per episode (truncation, >= 1); the benchmark's 1000.
        stochastic_init: perturb start states (the benchmark's training setting, default on).
        early_termination: end an episode when the robot has fallen (see :meth:`fallen`).
        solver: ``"semi_implicit"`` (default) or ``"featherstone"``.
        **physics_overrides: :class:`ArticulationPhysics` fields, e.g. ``contact_ke=2e4``.

    A world whose simulated state is not finite is terminated and reset in that step, its reward
    replaced by 0, and counted (:meth:`log_metrics`).
    """

    obs_dim: int
    action_dim: int
    physics: ArticulationPhysics
    vectorized_backward = False
    """Newton's step is a Warp kernel that torch's vmap cannot batch."""

    def __init__(
        self,
        num_envs: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        seed: int | None = 0,
        max_episode_steps: int = 1000,
        stochastic_init: bool = True,
        early_termination: bool = True,
        solver: str = "semi_implicit",
        **physics_overrides: Any,
    ) -> None:
        check_env_sizes(num_envs, max_episode_steps)
        if dtype != torch.float32:
            raise ValueError(
                f"dtype={dtype} is invalid; valid: torch.float32 (Newton simulates in float32)"
            )
        valid = {f.name for f in fields(ArticulationPhysics)} - {"asset"}
        unknown = sorted(set(physics_overrides) - valid)
        if unknown:
            raise ValueError(f"unknown physics parameters {unknown}; valid: {sorted(valid)}")
        self.physics = replace(self.physics, **physics_overrides)
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.stochastic_init = stochastic_init
        self.early_termination = early_termination
        self.device = torch.device(device) if device is not None else torch.empty(0).device
        self.dtype = dtype
        self.sim = NewtonArticulation(self.physics, num_envs, self.device, solver)
        self.generator = torch.Generator(device=self.device)
        if seed is not None:
            self.generator.manual_seed(seed)
        self.joint_q: torch.Tensor | None = None
        self.joint_qd: torch.Tensor | None = None
        self.sim_state: tuple[torch.Tensor, torch.Tensor] | None = None
        self.actions = torch.zeros(num_envs, self.action_dim, device=self.device)
        self.elapsed = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.unstable_worlds = 0

    # ------------------------------------------------------------------------ task interface
    def initial_states(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(joint_q [count, C], joint_qd [count, D])`` start states."""
        raise NotImplementedError

    def observe(
        self, joint_q: torch.Tensor, joint_qd: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """``[B, O]`` observation of ``joint_q [B, C]``, ``joint_qd [B, D]`` and the last
        ``actions [B, A]``."""
        raise NotImplementedError

    def reward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``[B]`` reward of reaching ``obs [B, O]`` under ``actions [B, A]``."""
        raise NotImplementedError

    def fallen(self, obs: torch.Tensor) -> torch.Tensor:
        """``[B]`` bool, the robot in ``obs [B, O]`` has fallen (early termination)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------ helpers
    def uniform(self, count: int, size: int, half_width: float) -> torch.Tensor:
        """``[count, size]`` noise uniform in ``+-half_width``, from the env's generator."""
        unit = torch.rand((count, size), generator=self.generator, device=self.device)
        return half_width * (2.0 * unit - 1.0)

    # ------------------------------------------------------------------------------ VecEnv
    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Start new episodes in every world; return ``obs [B, O]``."""
        if seed is not None:
            self.generator.manual_seed(seed)
        self.joint_q, self.joint_qd = self.initial_states(self.num_envs)
        self.sim_state = self.sim.state_from_joints(self.joint_q, self.joint_qd)
        self.actions = torch.zeros_like(self.actions)
        self.elapsed.zero_()
        return self.observe(self.joint_q, self.joint_qd, self.actions)

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Advance every world by ``dt`` (1/60 s) under ``action [B, A]`` in ``[-1, 1]``.

        The action is clipped to ``[-1, 1]`` and applied as ``action_strength`` times it on the
        actuated joints, held over the substeps. Returns ``obs [B, O]``, ``reward [B]``,
        ``terminated [B]`` (fell, or the simulation blew up), ``truncated [B]`` (the episode
        reached ``max_episode_steps``) and ``info = {"final_obs": [B, O]}``.
        """
        if self.sim_state is None:
            raise RuntimeError("step() called before reset(); call reset() first")
        check_action(action, self.num_envs, self.action_dim)
        actions = action.clamp(-1.0, 1.0)
        unactuated = self.sim.dofs - self.action_dim
        joint_f = F.pad(self.physics.action_strength * actions, (unactuated, 0))
        position, velocity, joint_q, joint_qd = self.sim.step(self.sim_state, joint_f)
        final_obs = self.observe(joint_q, joint_qd, actions)
        unstable = ~(torch.isfinite(final_obs).all(-1))
        reward = torch.where(unstable, 0.0, self.reward(final_obs, actions))
        self.unstable_worlds += int(unstable.sum())
        self.elapsed += 1
        terminated = unstable
        if self.early_termination:
            terminated = terminated | self.fallen(final_obs)
        truncated = self.elapsed >= self.max_episode_steps
        done = terminated | truncated
        any_done = bool(done.any())
        if any_done:
            fresh_q, fresh_qd = self.initial_states(int(done.sum()))
            q_reset, qd_reset = joint_q.detach().clone(), joint_qd.detach().clone()
            q_reset[done], qd_reset[done] = fresh_q, fresh_qd
            position_reset, velocity_reset = self.sim.state_from_joints(q_reset, qd_reset)
            # where() cuts the gradient of the reset worlds only; the others stay attached.
            keep = done[:, None]
            joint_q = torch.where(keep, q_reset, joint_q)
            joint_qd = torch.where(keep, qd_reset, joint_qd)
            position = torch.where(keep, position_reset, position)
            velocity = torch.where(keep, velocity_reset, velocity)
            actions = torch.where(keep, 0.0, actions)
            self.elapsed[done] = 0
        self.joint_q, self.joint_qd, self.actions = joint_q, joint_qd, actions
        self.sim_state = (position, velocity)
        obs = self.observe(joint_q, joint_qd, actions) if any_done else final_obs
        return obs, reward, terminated, truncated, {"final_obs": final_obs}

    def detach(self) -> None:
        """Cut the autograd graph at the current state."""
        if self.sim_state is not None:
            assert self.joint_q is not None and self.joint_qd is not None  # set with sim_state
            self.joint_q, self.joint_qd = self.joint_q.detach(), self.joint_qd.detach()
            self.sim_state = (self.sim_state[0].detach(), self.sim_state[1].detach())
        self.actions = self.actions.detach()

    def log_metrics(self) -> dict[str, float]:
        """Counts since the last call, for the training log: worlds whose backward gradient was
        not finite and got zeroed (per step), and worlds whose state blew up and were reset."""
        metrics = {
            "physics/nonfinite_grad_worlds": float(self.sim.nonfinite_gradient_worlds),
            "physics/unstable_worlds": float(self.unstable_worlds),
        }
        self.sim.nonfinite_gradient_worlds = 0
        self.unstable_worlds = 0
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """Worlds (joint and solver state), last actions, episode clocks and the noise
        generator: enough to continue exactly."""

        def saved(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.detach().clone()

        position, velocity = self.sim_state if self.sim_state is not None else (None, None)
        return {
            "joint_q": saved(self.joint_q),
            "joint_qd": saved(self.joint_qd),
            "sim_position": saved(position),
            "sim_velocity": saved(velocity),
            "actions": saved(self.actions),
            "elapsed": self.elapsed.clone(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` wrote."""

        def loaded(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(self.device, self.dtype)

        self.joint_q, self.joint_qd = loaded(state["joint_q"]), loaded(state["joint_qd"])
        position, velocity = loaded(state["sim_position"]), loaded(state["sim_velocity"])
        self.sim_state = None if position is None or velocity is None else (position, velocity)
        self.actions = state["actions"].to(self.device, self.dtype)
        self.elapsed = state["elapsed"].to(self.device)
        self.generator.set_state(state["generator"])
