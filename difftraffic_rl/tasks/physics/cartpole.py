"""Cart-pole swing-up of the SHAC benchmark (Xu et al. 2022, DiffRL), in closed form with torch ops.

A cart slides on a rail (``x``, m) and carries a pole on a hinge (``theta``, rad, 0 = upright,
counter-clockwise positive); the pole starts hanging down (``theta = -pi``) and must be swung up
and balanced. The benchmark simulates it as a two-joint articulation in dflex; here the same
system is written as its Lagrangian equations of motion, which for a cart-pole are exact:

    (M + m) x''          + m l cos(theta) theta'' = F + m l sin(theta) theta'^2 - b x' + F_lim
    m l cos(theta) x''   + (I + m l^2)    theta'' = m g l sin(theta) - b theta'

with ``F = 1000 N * clip(action, -1, 1)``, integrated like dflex's semi-implicit integrator
(velocity first, then position) with 4 substeps per control step of 1/60 s.

The parameters are the benchmark's (its ``cartpole.urdf`` and dflex loader): cart 1 kg, pole
10 kg with its centre of mass 0.5 m from the hinge and 1 kg m^2 of inertia about it, gravity
9.81 m/s^2, and dflex's joint terms as the benchmark builds them: a viscous damping of 1 (N s/m
on the cart, N m s/rad on the pole) that dflex applies at every joint at all times (its
``limit_kd``), and a one-sided spring of 100 N/m beyond the rail's ends at +-4 m. The reward is
``-(theta^2 + 0.1 theta'^2 + 0.05 x^2 + 0.1 x'^2)`` with ``theta`` wrapped to ``[-pi, pi)``,
evaluated after the step; episodes last 240 steps (4 s) and never terminate early.

Differences from the benchmark, and why: the URDF rotates the pole by 3.1415 rad, not pi, so the
benchmark's upright is 9e-5 rad off its ``theta = 0``; here upright is exactly 0. Everything else
is the same model; the numbers are not bit-identical to dflex (float32 on another engine).

Shapes: ``B`` parallel worlds; a state is ``[B, 4] = (x, x', theta, theta')`` in (m, m/s, rad,
rad/s); gradients flow to actions, states and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch

from difftraffic_rl.envs import check_action, check_env_sizes, check_physical_parameters

__all__ = [
    "CartPoleParams",
    "CartPoleSwingUpEnv",
    "cartpole_energy",
    "cartpole_observation",
    "cartpole_reward",
    "cartpole_step",
    "wrap_angle",
]


@dataclass(frozen=True)
class CartPoleParams:
    """Physical and integration parameters; defaults are the SHAC benchmark's.

    Attributes:
        cart_mass: ``M`` (kg, > 0).
        pole_mass: ``m`` (kg, > 0).
        pole_com_distance: ``l``, hinge to the pole's centre of mass (m, > 0).
        pole_inertia: ``I``, the pole's moment of inertia about its centre of mass (kg m^2, >= 0).
        gravity: ``g`` (m/s^2, >= 0).
        force_scale: force on the cart per unit action (N, > 0).
        joint_damping: ``b``, viscous damping of both joints (N s/m and N m s/rad, >= 0).
        cart_limit: the rail's half length (m, > 0).
        cart_limit_stiffness: spring pushing the cart back beyond ``+-cart_limit`` (N/m, >= 0).
        dt: control step (s, > 0).
        substeps: integration substeps per control step (>= 1).
    """

    cart_mass: float = 1.0
    pole_mass: float = 10.0
    pole_com_distance: float = 0.5
    pole_inertia: float = 1.0
    gravity: float = 9.81
    force_scale: float = 1000.0
    joint_damping: float = 1.0
    cart_limit: float = 4.0
    cart_limit_stiffness: float = 100.0
    dt: float = 1.0 / 60.0
    substeps: int = 4

    def __post_init__(self) -> None:
        positive = (
            "cart_mass",
            "pole_mass",
            "pole_com_distance",
            "force_scale",
            "cart_limit",
            "dt",
        )
        non_negative = ("pole_inertia", "gravity", "joint_damping", "cart_limit_stiffness")
        check_physical_parameters(self, positive, non_negative)


def _check_state(state: torch.Tensor) -> None:
    if state.ndim != 2 or state.shape[-1] != 4:
        raise ValueError(
            f"state has shape {tuple(state.shape)}; expected [B, 4] (x, x', theta, theta')"
        )


def _accelerations(
    state: torch.Tensor, force: torch.Tensor, params: CartPoleParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x'', theta'')`` ``[B]`` each (m/s^2, rad/s^2) for ``state [B, 4]``, ``force [B]`` (N)."""
    x, x_dot, theta, theta_dot = state.unbind(-1)
    p = params
    total_mass = p.cart_mass + p.pole_mass
    pole_moment = p.pole_inertia + p.pole_mass * p.pole_com_distance**2
    coupling = p.pole_mass * p.pole_com_distance * torch.cos(theta)
    sin_theta = torch.sin(theta)
    limit_force = -p.cart_limit_stiffness * (x - x.clamp(-p.cart_limit, p.cart_limit))
    cart_rhs = (
        force
        + p.pole_mass * p.pole_com_distance * sin_theta * theta_dot**2
        - p.joint_damping * x_dot
        + limit_force
    )
    pole_rhs = (
        p.pole_mass * p.gravity * p.pole_com_distance * sin_theta - p.joint_damping * theta_dot
    )
    # The mass matrix is positive definite (I >= 0, M > 0), so the determinant is > 0.
    determinant = total_mass * pole_moment - coupling**2
    x_acc = (pole_moment * cart_rhs - coupling * pole_rhs) / determinant
    theta_acc = (total_mass * pole_rhs - coupling * cart_rhs) / determinant
    return x_acc, theta_acc


def cartpole_step(
    state: torch.Tensor, action: torch.Tensor, params: CartPoleParams | None = None
) -> torch.Tensor:
    """Advance ``state [B, 4]`` by one control step ``params.dt`` under ``action [B, 1]``.

    The action is clipped to ``[-1, 1]`` (as the benchmark does) and scaled to
    ``params.force_scale`` newtons, held over ``params.substeps`` semi-implicit Euler substeps.
    Returns the new state ``[B, 4]``, differentiable w.r.t. ``state`` and ``action``.
    """
    p = params or CartPoleParams()
    _check_state(state)
    if action.shape != (state.shape[0], 1):
        raise ValueError(
            f"action has shape {tuple(action.shape)}; expected {(state.shape[0], 1)} (B, 1)"
        )
    force = action[:, 0].clamp(-1.0, 1.0) * p.force_scale
    h = p.dt / p.substeps
    for _ in range(p.substeps):
        x_acc, theta_acc = _accelerations(state, force, p)
        x_dot = state[:, 1] + h * x_acc
        theta_dot = state[:, 3] + h * theta_acc
        state = torch.stack(
            (state[:, 0] + h * x_dot, x_dot, state[:, 2] + h * theta_dot, theta_dot), dim=-1
        )
    return state


def wrap_angle(theta: torch.Tensor) -> torch.Tensor:
    """Angle (rad) wrapped to ``[-pi, pi)``, same shape; derivative 1 between the jumps."""
    return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi


def cartpole_observation(state: torch.Tensor) -> torch.Tensor:
    """``[B, 5] = (x, x', sin theta, cos theta, theta')`` of ``state [B, 4]``."""
    _check_state(state)
    x, x_dot, theta, theta_dot = state.unbind(-1)
    return torch.stack((x, x_dot, torch.sin(theta), torch.cos(theta), theta_dot), dim=-1)


def cartpole_reward(state: torch.Tensor) -> torch.Tensor:
    """Benchmark reward ``-(theta^2 + 0.1 theta'^2 + 0.05 x^2 + 0.1 x'^2)`` ``[B]``, wrapped
    ``theta``; at most 0, reached upright and at rest at the rail's centre."""
    _check_state(state)
    x, x_dot, theta, theta_dot = state.unbind(-1)
    return -(wrap_angle(theta) ** 2 + 0.1 * theta_dot**2 + 0.05 * x**2 + 0.1 * x_dot**2)


def cartpole_energy(state: torch.Tensor, params: CartPoleParams | None = None) -> torch.Tensor:
    """Mechanical energy ``[B]`` (J): kinetic, gravity (0 at the hinge height) and rail-end spring.

    Without damping and force this is conserved by the continuous dynamics; the integrator keeps
    it to within its O(dt) error.
    """
    p = params or CartPoleParams()
    _check_state(state)
    x, x_dot, theta, theta_dot = state.unbind(-1)
    ml = p.pole_mass * p.pole_com_distance
    kinetic = (
        0.5 * (p.cart_mass + p.pole_mass) * x_dot**2
        + ml * torch.cos(theta) * x_dot * theta_dot
        + 0.5 * (p.pole_inertia + ml * p.pole_com_distance) * theta_dot**2
    )
    potential = ml * p.gravity * torch.cos(theta)
    overshoot = x - x.clamp(-p.cart_limit, p.cart_limit)
    return kinetic + potential + 0.5 * p.cart_limit_stiffness * overshoot**2


class CartPoleSwingUpEnv:
    """``num_envs`` cart-pole swing-up worlds (a :class:`~difftraffic_rl.envs.VecEnv`).

    Args:
        num_envs: parallel worlds ``B`` (>= 1).
        device, dtype: where the state lives and its floating type (float64 for gradient checks).
        seed: seed of the generator of the start noise; ``reset(seed)`` re-seeds it.
        max_episode_steps: steps per episode (truncation, >= 1); the benchmark's 240 (4 s).
        stochastic_init: add the benchmark's optional start noise, uniform in ``+-pi/2`` (m, rad)
            on ``x`` and ``theta`` and in ``+-0.25`` (m/s, rad/s) on the velocities; off by
            default, as in the benchmark.
        **param_overrides: :class:`CartPoleParams` fields, e.g. ``joint_damping=0.0``.

    Observations ``[B, 5] = (x, x', sin theta, cos theta, theta')``; actions ``[B, 1]`` in
    ``[-1, 1]`` (force / 1000 N). Worlds reset in the step that ends them (see
    :mod:`difftraffic_rl.envs`); ``info["final_obs"]`` is the observation the step reached.
    """

    obs_dim = 5
    action_dim = 1

    def __init__(
        self,
        num_envs: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        seed: int | None = 0,
        max_episode_steps: int = 240,
        stochastic_init: bool = False,
        **param_overrides: Any,
    ) -> None:
        check_env_sizes(num_envs, max_episode_steps)
        valid = {f.name for f in fields(CartPoleParams)}
        unknown = sorted(set(param_overrides) - valid)
        if unknown:
            raise ValueError(f"unknown cart-pole parameters {unknown}; valid: {sorted(valid)}")
        self.params = CartPoleParams(**param_overrides)
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.stochastic_init = stochastic_init
        self.device = torch.device(device) if device is not None else torch.empty(0).device
        self.dtype = dtype
        self.generator = torch.Generator(device=self.device)
        if seed is not None:
            self.generator.manual_seed(seed)
        self.state: torch.Tensor | None = None
        self.elapsed = torch.zeros(num_envs, dtype=torch.long, device=self.device)

    def initial_states(self, count: int) -> torch.Tensor:
        """``[count, 4]`` start states: hanging down at rest, plus noise if ``stochastic_init``."""
        start = torch.tensor([0.0, 0.0, -math.pi, 0.0], device=self.device, dtype=self.dtype)
        states = start.expand(count, 4).clone()
        if self.stochastic_init:
            unit = torch.rand(
                (count, 4), generator=self.generator, device=self.device, dtype=self.dtype
            )
            amplitude = torch.tensor(
                [math.pi, 0.5, math.pi, 0.5], device=self.device, dtype=self.dtype
            )
            states = states + amplitude * (unit - 0.5)
        return states

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Start new episodes in every world; return ``obs [B, 5]``."""
        if seed is not None:
            self.generator.manual_seed(seed)
        self.state = self.initial_states(self.num_envs)
        self.elapsed.zero_()
        return cartpole_observation(self.state)

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Advance every world by ``dt`` (1/60 s) under ``action [B, 1]`` in ``[-1, 1]``.

        Returns ``obs [B, 5]``, ``reward [B]``, ``terminated [B]`` (always False),
        ``truncated [B]`` (the episode reached ``max_episode_steps``) and
        ``info = {"final_obs": [B, 5]}``.
        """
        if self.state is None:
            raise RuntimeError("step() called before reset(); call reset() first")
        check_action(action, self.num_envs, self.action_dim)
        reached = cartpole_step(self.state, action, self.params)
        reward = cartpole_reward(reached)
        final_obs = cartpole_observation(reached)
        self.elapsed += 1
        truncated = self.elapsed >= self.max_episode_steps
        terminated = torch.zeros_like(truncated)
        if bool(truncated.any()):
            fresh = reached.detach().clone()
            fresh[truncated] = self.initial_states(int(truncated.sum()))
            # where() cuts the gradient of the reset worlds only; the others stay attached.
            reached = torch.where(truncated[:, None], fresh, reached)
            self.elapsed[truncated] = 0
        self.state = reached
        info = {"final_obs": final_obs}
        return cartpole_observation(reached), reward, terminated, truncated, info

    def detach(self) -> None:
        """Cut the autograd graph at the current state."""
        if self.state is not None:
            self.state = self.state.detach()

    def state_dict(self) -> dict[str, Any]:
        """Worlds, episode clocks and the noise generator: enough to continue exactly."""
        return {
            "state": None if self.state is None else self.state.detach().clone(),
            "elapsed": self.elapsed.clone(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` wrote."""
        saved = state["state"]
        self.state = None if saved is None else saved.to(self.device, self.dtype)
        self.elapsed = state["elapsed"].to(self.device)
        self.generator.set_state(state["generator"])
