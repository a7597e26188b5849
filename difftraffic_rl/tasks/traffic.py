"""The traffic problems through the environment protocol: the pace car (paper appendix 7.5.2)
and mixed autonomy on the Sugiyama ring.

A thin adapter around a :class:`difftraffic.env.TrafficEnv`: the simulator already steps batched
torch worlds differentiably, resets finished worlds in the same step and returns the reached
observation in ``info["final_obs"]``; this module only fits it to
:class:`difftraffic_rl.envs.VecEnv` (``reset`` returns the observation alone) and makes its state
checkpointable, so a resumed run continues the very episodes it left.

Gradients of rewards reach the actions through the automated car's dynamics and the car-following
models of the humans behind it; lane changes are discrete, so the gradient is partial there (see
``docs/simulator.md``).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch

from difftraffic_rl.envs import check_action

__all__ = ["PaceCarVecEnv", "RingVecEnv", "TrafficVecEnv"]


class TrafficVecEnv:
    """The protocol's face of a :class:`difftraffic.env.TrafficEnv` of ``num_envs`` worlds."""

    def __init__(self, env: Any, num_envs: int) -> None:
        self.env = env
        self.num_envs = num_envs
        self.obs_dim = self.env.obs_dim
        self.action_dim = self.env.action_dim
        self.max_episode_steps = self.env.max_episode_steps

    @property
    def task(self) -> Any:
        """The underlying task (road, reward, configuration)."""
        return self.env.task

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Start new episodes in every world; ``obs: [B, obs_dim]``."""
        obs, _ = self.env.reset(seed=seed)
        return obs

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Advance every world by the task's ``dt``; ``action: [B, action_dim]`` in ``[-1, 1]``
        (clipped by the simulator)."""
        check_action(action, self.num_envs, self.action_dim)
        return self.env.step(action)

    def detach(self) -> None:
        """Cut the autograd graph at the current state."""
        self.env.detach()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the same episodes: worlds, drivers, clocks, RNG."""
        env = self.env
        if env.state is None or env.drivers is None:
            return {}
        return {
            "state": {
                f.name: getattr(env.state, f.name).detach().clone() for f in fields(env.state)
            },
            "drivers": env.drivers.state_dict(),
            "elapsed": env.elapsed.clone(),
            "generator": env.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` wrote (an empty dict means: not reset yet)."""
        if not state:
            return
        from difftraffic import IDMParams, TrafficState, compute_neighbors
        from difftraffic.car_following import drivers_from_state_dict

        env = self.env
        device = env.device
        env.state = TrafficState(**{k: v.to(device) for k, v in state["state"].items()})
        if "drivers" in state:
            env.drivers = drivers_from_state_dict(state["drivers"], device)
        else:  # checkpoints written before the car-following model interface: IDM drivers
            env.drivers = IDMParams(**{k: v.to(device) for k, v in state["idm"].items()})
        env.neighbors = compute_neighbors(env.state, env.task.road)
        env.elapsed = state["elapsed"].to(device)
        env.generator.set_state(state["generator"])


class PaceCarVecEnv(TrafficVecEnv):
    """``num_envs`` pace-car worlds of one variant.

    Args:
        num_envs: number of parallel worlds ``B`` (>= 1).
        variant: ``1lane``, ``2lane``, ``3lane``, ``4lane`` or ``10lane``.
        device, dtype: where the simulation runs.
        seed: seed of the simulator's generator (initial lanes of the pace car); ``reset(seed)``
            re-seeds it.
        **config_overrides: :class:`difftraffic.PaceCarConfig` fields, e.g. ``target_speed=12.0``,
            ``max_episode_steps=200`` or ``lane_membership="center"`` (the GI-PPO authors' lane
            rule); a run passes its ``task_kwargs`` here.
    """

    def __init__(
        self,
        num_envs: int,
        variant: str = "1lane",
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        seed: int | None = 0,
        **config_overrides: Any,
    ) -> None:
        from difftraffic import PaceCarEnv

        self.variant = variant
        # The protocol checks actions itself; the simulator's own check would sync twice.
        env = PaceCarEnv(
            variant,
            num_envs,
            config_overrides=config_overrides,
            seed=seed,
            device=device,
            dtype=dtype,
            check_actions=False,
        )
        super().__init__(env, num_envs)


class RingVecEnv(TrafficVecEnv):
    """``num_envs`` worlds of one automated car among 21 drivers on the Sugiyama ring.

    Args:
        num_envs: number of parallel worlds ``B`` (>= 1).
        device, dtype: where the simulation runs.
        seed: seed of the simulator's generator (the drivers drawn per world).
        **task_kwargs: :class:`difftraffic.scenarios.RingTask` arguments, e.g.
            ``max_episode_steps=3000`` or ``headway_penalty=0.2``.
    """

    def __init__(
        self,
        num_envs: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        seed: int | None = 0,
        **task_kwargs: Any,
    ) -> None:
        from difftraffic import RingEnv

        env = RingEnv(
            num_envs, task_kwargs, seed=seed, device=device, dtype=dtype, check_actions=False
        )
        super().__init__(env, num_envs)
