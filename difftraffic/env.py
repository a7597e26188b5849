"""A batched, differentiable traffic environment following Gymnasium 1.x vector conventions.

:class:`TrafficEnv` runs ``num_envs`` worlds of a :class:`TrafficTask` as torch tensors: ``step``
returns observations and rewards that stay connected to the autograd graph, so a loss on them
back-propagates into the actions (and through the simulator into earlier actions). Call
:meth:`TrafficEnv.detach` at a rollout boundary to cut the graph.

Autoreset is *same-step*: when a world terminates or is truncated, the observation returned for it
is the first observation of its next episode (no gradient to the past); the differentiable
observation reached by the step is always in ``info["final_obs"]`` (``[B, obs_dim]``, equal to the
returned observation where the episode goes on), and ``info["_final_obs"]`` marks the worlds that
ended.

:class:`difftraffic.scenarios.pace_car_env.PaceCarEnv` is the pace-car problem on this class and
:class:`~difftraffic.scenarios.pace_car_env.PaceCarGymEnv` its single-world numpy face.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any, Protocol, cast, get_args

import gymnasium
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from torch import Tensor

from difftraffic.car_following import Drivers
from difftraffic.dynamics import StepPath
from difftraffic.dynamics import step as simulation_step
from difftraffic.errors import check_device, check_simulation_dtype
from difftraffic.lane_change import MOBIL
from difftraffic.neighbors import Neighbors, compute_neighbors
from difftraffic.render.renderer import RENDER_MODES
from difftraffic.road import Road
from difftraffic.state import TrafficState

if TYPE_CHECKING:
    from difftraffic.render.renderer import Overlay, Renderer, RenderMode


class TrafficTask(Protocol):
    """What a task gives :class:`TrafficEnv`: initial worlds, controls, observation, reward.

    A task whose human drivers change lanes also has an attribute ``lane_changes``: their
    :class:`difftraffic.MOBIL` parameters (e.g. ``Scenario.lane_changes``), which the
    environment passes to every step; without it humans keep their lanes. Likewise an attribute
    ``soft_lanes`` (a :class:`difftraffic.SoftLanes` or ``None``) selects smooth leader
    selection for every step, and ``av_kinematics`` the autonomous vehicles' motion model
    (:func:`difftraffic.step`; ``"rear_axle"`` without it).
    """

    road: Road
    action_dim: int

    @property
    def dt(self) -> float: ...

    @property
    def max_episode_steps(self) -> int: ...

    @property
    def obs_dim(self) -> int: ...

    def initial(
        self, batch_size: int, generator: torch.Generator, device: torch.device | str | None,
        dtype: torch.dtype,
    ) -> tuple[TrafficState, Drivers]: ...  # fmt: skip

    def controls(self, state: TrafficState, action: Tensor) -> tuple[Tensor, Tensor]: ...

    def observe(self, state: TrafficState) -> Tensor: ...

    def evaluate(
        self, state: TrafficState, collided: Tensor
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]: ...


def _select_worlds(mask: Tensor, new: TrafficState, old: TrafficState) -> TrafficState:
    """Field by field, ``new``'s worlds where ``mask [B]`` is True and ``old``'s elsewhere."""
    column = mask.unsqueeze(1)
    return TrafficState(
        **{
            f.name: torch.where(column, getattr(new, f.name), getattr(old, f.name))
            for f in fields(new)
        }
    )


class TrafficEnv(VectorEnv):
    """``num_envs`` worlds of a task, stepped together as torch tensors.

    Args:
        task: a :class:`TrafficTask`, e.g. :class:`difftraffic.scenarios.PaceCarTask`.
        num_envs: number of worlds ``B``, >= 1.
        seed: seed of the environment's ``torch.Generator`` (reset(seed=...) re-seeds).
        device, dtype: where the simulation runs; float32 by default, float64 for checks.
        render_mode: ``"rgb_array"``, ``"human"`` or ``None``; :meth:`render` draws world
            ``render_world`` (an attribute, default 0) with :class:`difftraffic.render.Renderer`.
        as_numpy: return numpy arrays (detached) instead of torch tensors, for plain Gymnasium use.
        check_actions: validate every action (shape, NaN/inf); costs one device sync per step.
        step_path: the simulation step's path (:func:`difftraffic.dynamics.step`). ``"eager"``
            by default: every published learning result was trained on it, the 2-lane pace
            car's outcome flips with last-bit changes of the simulation (docs/fidelity.md), and
            for worlds of a few cars the simulation is a small part of an epoch (GI-PPO on the
            2-lane pace car: 2.3 s per epoch on either path). ``"auto"`` takes the fused step
            where it can run: for many or large worlds.
    """

    def __init__(
        self,
        task: TrafficTask,
        num_envs: int = 1,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        render_mode: str | None = None,
        as_numpy: bool = False,
        check_actions: bool = True,
        step_path: StepPath = "eager",
    ) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(
                f"render_mode must be one of {list(RENDER_MODES)} or None, got {render_mode!r}"
            )
        check_simulation_dtype("dtype", dtype)
        if step_path not in get_args(StepPath):
            raise ValueError(f"step_path must be one of {get_args(StepPath)}, got {step_path!r}")
        self.step_path: StepPath = step_path
        self.task = task
        self.num_envs = num_envs
        self.device = check_device("device", device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.render_mode = render_mode
        self.as_numpy = as_numpy
        self.check_actions = check_actions
        self.metadata = {
            "autoreset_mode": AutoresetMode.SAME_STEP,
            "render_modes": list(RENDER_MODES),
            "render_fps": max(1, round(1.0 / task.dt)),
        }
        self.single_observation_space = gymnasium.spaces.Box(
            -np.inf, np.inf, (task.obs_dim,), np.float32
        )
        self.single_action_space = gymnasium.spaces.Box(-1.0, 1.0, (task.action_dim,), np.float32)
        self.observation_space = gymnasium.vector.utils.batch_space(
            self.single_observation_space, num_envs
        )
        self.action_space = gymnasium.vector.utils.batch_space(self.single_action_space, num_envs)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed if seed is not None else int(torch.seed()))
        self.state: TrafficState | None = None
        self.drivers: Drivers | None = None
        self.neighbors: Neighbors | None = None
        self.lane_changes: MOBIL | None = None
        self.elapsed = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.last_reward: Tensor | None = None
        self.render_world = 0
        self._renderer: Renderer | None = None

    # -- the protocol of difftraffic_rl --------------------------------------------------------

    @property
    def obs_dim(self) -> int:
        return self.task.obs_dim

    @property
    def action_dim(self) -> int:
        return self.task.action_dim

    @property
    def max_episode_steps(self) -> int:
        return self.task.max_episode_steps

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start new episodes in every world. ``seed`` re-seeds the environment's generator."""
        if seed is not None:
            self.generator.manual_seed(seed)
        self.state, self.drivers = self.task.initial(
            self.num_envs, self.generator, self.device, self.dtype
        )
        lane_changes = getattr(self.task, "lane_changes", None)
        self.lane_changes = None if lane_changes is None else lane_changes.to(self.state.x)
        self.neighbors = self._leaders()
        self.elapsed.zero_()
        self.last_reward = None
        return self._out(self.task.observe(self.state)), {}

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Advance every world by ``dt`` under ``actions`` (``[B, action_dim]``).

        Actions are meant to lie in ``[-1, 1]`` (the action space); the task clips entries outside
        it to the nearest bound, by design (agents often emit unbounded Gaussian samples), and
        the clipped entries get zero gradient. Other floating dtypes are cast to the env's.

        Returns:
            ``(obs [B, obs_dim], reward [B], terminated [B], truncated [B], info)``; ``info``
            holds ``final_obs`` (the observation reached, before any autoreset), ``_final_obs``
            (worlds that ended) and each termination reason as a ``[B]`` bool tensor.
        """
        state, drivers = self.require_worlds()
        action = self._as_action_tensor(actions)
        acceleration, steering = self.task.controls(state, action)
        result = simulation_step(
            state,
            self.task.road,
            drivers,
            self.task.dt,
            acceleration,
            steering,
            self.neighbors,
            generator=self.generator,
            path=self.step_path,
            lane_changes=self.lane_changes,
            soft_lanes=getattr(self.task, "soft_lanes", None),
            av_kinematics=getattr(self.task, "av_kinematics", "rear_axle"),
        )
        reward, terminated, reasons = self.task.evaluate(result.state, result.collided)
        self.elapsed += 1
        truncated = (self.elapsed >= self.task.max_episode_steps) & ~terminated
        obs = self.task.observe(result.state)
        self.state, self.neighbors = result.state, result.neighbors
        self.last_reward = reward
        done = terminated | truncated
        info: dict[str, Any] = {**reasons, "final_obs": obs, "_final_obs": done}
        if bool(done.any()):
            obs = self._autoreset(done, obs)
        return self._out(obs), self._out(reward), self._out(terminated), self._out(truncated), info

    def detach(self) -> None:
        """Cut the autograd graph: later steps no longer back-propagate into earlier ones."""
        if self.state is not None:
            self.state = self.state.detach()

    def render(self) -> np.ndarray | None:  # type: ignore[override]  # one world's frame
        """Draw world ``render_world`` of the current state (pygame, loaded on first call).

        Returns:
            ``[H, W, 3]`` uint8 RGB for ``render_mode="rgb_array"``; ``None`` for ``"human"``
            (the frame is shown in a window) and, with a warning, when ``render_mode`` is None.
        """
        if self.render_mode is None:
            gymnasium.logger.warn(
                "render() called with render_mode=None; pass render_mode='rgb_array' or 'human'"
            )
            return None
        state, _ = self.require_worlds()
        from difftraffic.render import Renderer

        if self._renderer is None:
            mode = cast("RenderMode", self.render_mode)
            self._renderer = Renderer(self.task.road, mode=mode, fps=self.metadata["render_fps"])
        world = self.render_world
        return self._renderer.render(state, world, **self.overlay(world))

    def overlay(self, world: int) -> Overlay:
        """The text overlay of world ``world``: episode time (s), last step reward and the task's
        target speed (m/s, for tasks with a ``target_speed``, e.g. the pace car)."""
        reward = None if self.last_reward is None else float(self.last_reward[world])
        return {
            "time": float(self.elapsed[world]) * self.task.dt,
            "reward": reward,
            "target_speed": getattr(self.task, "target_speed", None),
        }

    def close_extras(self, **kwargs: Any) -> None:
        """Close the render window, if one is open."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def require_worlds(self) -> tuple[TrafficState, Drivers]:
        """The current ``[B, N]`` state and drivers; ``RuntimeError`` before :meth:`reset`."""
        if self.state is None or self.drivers is None:
            raise RuntimeError("call reset() first: the environment has no worlds yet")
        return self.state, self.drivers

    # -- internals -----------------------------------------------------------------------------

    def _leaders(self) -> Neighbors | None:
        """Leaders of the current state; ``None`` with lane changes, whose drivers changing lane
        also lead in their target lane: the step finds them."""
        if self.lane_changes is not None or self.state is None:
            return None
        return compute_neighbors(self.state, self.task.road)

    def _autoreset(self, done: Tensor, obs: Tensor) -> Tensor:
        fresh_state, fresh_drivers = self.task.initial(
            self.num_envs, self.generator, self.device, self.dtype
        )
        state, drivers = self.require_worlds()
        self.state = _select_worlds(done, fresh_state, state)
        self.drivers = fresh_drivers.select_worlds(done, drivers)
        self.neighbors = self._leaders()
        self.elapsed = torch.where(done, torch.zeros_like(self.elapsed), self.elapsed)
        return torch.where(done.unsqueeze(1), self.task.observe(fresh_state), obs)

    def _as_action_tensor(self, actions: Any) -> Tensor:
        try:
            action = torch.as_tensor(actions, device=self.device)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"actions must be a [num_envs, action_dim] array of numbers, got "
                f"{type(actions).__name__} {actions!r:.60}"
            ) from None
        if not action.is_floating_point():
            action = action.to(self.dtype)
        expected = (self.num_envs, self.task.action_dim)
        if self.check_actions:
            if tuple(action.shape) != expected:
                raise ValueError(
                    f"actions must have shape {expected} [num_envs, action_dim], "
                    f"got {tuple(action.shape)}"
                )
            bad = ~torch.isfinite(action)
            if bool(bad.any()):
                world = int(torch.nonzero(bad)[0, 0])
                raise ValueError(
                    f"actions must be finite, got {action[world].tolist()} for world {world}"
                )
        return action.to(self.dtype)

    def _out(self, value: Tensor) -> Any:
        return value.detach().cpu().numpy() if self.as_numpy else value


class SingleWorldGymEnv(gymnasium.Env):
    """One world of a :class:`TrafficEnv` with numpy observations, for ``gymnasium.make``.

    Observations are float32; the world is simulated in float64 for exact repeatability.

    Args:
        vector_env: a one-world :class:`TrafficEnv` (float64), which this wraps.
        render_mode: the vector env's render mode.
    """

    metadata: dict[str, Any] = {"render_modes": list(RENDER_MODES)}

    def __init__(self, vector_env: TrafficEnv, render_mode: str | None = None) -> None:
        self.vector_env = vector_env
        self.metadata = {**self.metadata, "render_fps": self.vector_env.metadata["render_fps"]}
        self.render_mode = render_mode
        self.observation_space = self.vector_env.single_observation_space
        self.action_space = self.vector_env.single_action_space
        self._last_frame: np.ndarray | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is None and self.vector_env.state is None:
            seed = int(self.np_random.integers(2**31))
        obs, _ = self.vector_env.reset(seed=seed)
        return self._obs(obs), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        batched = torch.as_tensor(np.asarray(action, dtype=np.float64)).reshape(1, -1)
        with torch.no_grad():
            obs, reward, terminated, truncated, info = self.vector_env.step(batched)
        if bool(info["_final_obs"][0]):
            # A single Gymnasium env ends its episode here: the user must call reset().
            obs = info["final_obs"]
            self.vector_env.state = None
        reasons = {key: bool(value[0]) for key, value in info.items() if not key.endswith("obs")}
        return self._obs(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]), reasons

    def render(self) -> np.ndarray | None:
        """The world as ``[H, W, 3]`` uint8 RGB (``render_mode="rgb_array"``) or shown in a
        window (``"human"``, returns ``None``). After the step that ends an episode the world
        is gone until ``reset()``, so this repeats the episode's last rendered frame."""
        if self.vector_env.state is None and self._last_frame is not None:
            return self._last_frame
        self._last_frame = self.vector_env.render()
        return self._last_frame

    def close(self) -> None:
        """Close the render window, if one is open."""
        self.vector_env.close()

    def _obs(self, obs: Tensor) -> np.ndarray:
        single: np.ndarray = obs[0].detach().cpu().numpy().astype(np.float32)
        return single
