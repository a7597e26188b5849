"""Roll a scenario or an environment out under a policy and write the rendered video."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from difftraffic.car_following import Drivers
from difftraffic.render.renderer import Overlay, RenderConfig, Renderer
from difftraffic.render.video import write_video
from difftraffic.road import Road
from difftraffic.scenario import Scenario
from difftraffic.state import TrafficState

EnvPolicy = Callable[[Any], Any]
"""``obs [B, obs_dim] -> action [B, action_dim]`` (torch, or numpy for ``as_numpy`` envs)."""
ScenarioPolicy = Callable[[TrafficState], tuple[Tensor, Tensor]]
"""``state [B, N] -> (acceleration [B, N] m/s^2, steering [B, N] rad)`` of the AVs."""


class RecordableEnv(Protocol):
    """What :func:`record_rollout` needs of an environment (:class:`difftraffic.TrafficEnv` has
    it); described here so that the render package never imports the environment module."""

    num_envs: int
    task: Any  # has ``road`` and ``dt``

    @property
    def action_dim(self) -> int: ...

    def reset(self, *, seed: int | None = None) -> tuple[Any, dict[str, Any]]: ...

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]: ...

    def require_worlds(self) -> tuple[TrafficState, Drivers]: ...

    def overlay(self, world: int) -> Overlay: ...


def record_rollout(
    source: Scenario | RecordableEnv,
    path: str | Path,
    steps: int,
    policy: EnvPolicy | ScenarioPolicy | Sequence[float] | None = None,
    *,
    seed: int = 0,
    world: int = 0,
    batch_size: int | None = None,
    config: RenderConfig | None = None,
    fps: float | None = None,
    progress: bool = True,
) -> Path:
    """Simulate ``steps`` steps and write the ``steps + 1`` rendered frames to ``path``.

    Args:
        source: a :class:`~difftraffic.scenario.Scenario` (sampled with ``seed``, stepped with
            :func:`~difftraffic.dynamics.step`) or a :class:`~difftraffic.env.TrafficEnv` (reset
            with ``seed``, stepped with its ``step``, autoreset included).
        path: ``.mp4`` or ``.gif`` file (see :func:`write_video`).
        steps: number of simulation steps, >= 1.
        policy: for an environment, a callable ``obs -> action`` or one fixed action
            (``action_dim`` numbers in ``[-1, 1]``) for every world; for a scenario, a callable
            ``state -> (acceleration, steering)`` (``[B, N]``, m/s^2 and rad) or one fixed
            ``(acceleration, steering)`` for every autonomous vehicle. ``None``: zero actions.
        seed: seed of the scenario sample or of the environment's reset.
        world: which world to draw, in ``[0, B)``.
        batch_size: number of worlds sampled from a scenario (``None``: ``world + 1``); an
            environment has its own ``num_envs``.
        config: what to draw (:class:`RenderConfig`).
        fps: frames per second of the video; ``None``: real time, ``1 / dt``.
        progress: show a progress bar.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not isinstance(source, Scenario):
        if batch_size is not None:
            raise ValueError(
                f"batch_size must be None for an environment (it has num_envs = "
                f"{source.num_envs}), got {batch_size!r}"
            )
        batch_size = source.num_envs
    elif batch_size is None:
        batch_size = world + 1
    _check_world(world, batch_size)
    if not isinstance(source, Scenario):
        road, dt = source.task.road, source.task.dt
        frames = _env_frames(source, steps, policy, seed, world, Renderer(road, config))
    else:
        road, dt = source.road, source.dt
        renderer = Renderer(road, config)
        frames = _scenario_frames(source, steps, policy, seed, world, batch_size, renderer)
    return _write(frames, steps + 1, path, fps if fps is not None else 1.0 / dt, progress)


def record_states(
    states: Sequence[TrafficState],
    road: Road,
    path: str | Path,
    dt: float,
    *,
    world: int = 0,
    config: RenderConfig | None = None,
    fps: float | None = None,
    progress: bool = True,
) -> Path:
    """Write states you already simulated (e.g. the list :func:`difftraffic.rollout` returns, or
    the states of your own loop), one frame each, to ``path``.

    Args:
        states: ``[B, N]`` states in time order, at least one.
        road: the road they live on.
        path: ``.mp4`` or ``.gif`` file.
        dt: seconds between consecutive states (the overlay's clock; real-time ``fps``).
        world: which world to draw, in ``[0, B)``.
        config, fps, progress: as for :func:`record_rollout`.
    """
    if len(states) == 0:
        raise ValueError("states must hold at least one TrafficState, got none")
    batch = states[0].x.shape[0]
    _check_world(world, batch)
    renderer = Renderer(road, config)
    frames = (
        _rgb(renderer.render(state, world, time=index * dt)) for index, state in enumerate(states)
    )
    return _write(frames, len(states), path, fps if fps is not None else 1.0 / dt, progress)


def _check_world(world: int, batch_size: int) -> None:
    if not isinstance(world, int) or not 0 <= world < batch_size:
        raise ValueError(f"world must be an integer in [0, {batch_size - 1}], got {world!r}")


def _write(
    frames: Iterator[np.ndarray], count: int, path: str | Path, fps: float, progress: bool
) -> Path:
    """Encode ``count`` frames to ``path`` behind a progress bar."""
    bar = tqdm(frames, total=count, desc=f"rendering {Path(path).name}", disable=not progress)
    return write_video(bar, path, fps)


def _env_frames(
    env: RecordableEnv,
    steps: int,
    policy: EnvPolicy | Sequence[float] | None,
    seed: int,
    world: int,
    renderer: Renderer,
) -> Iterator[np.ndarray]:
    with torch.no_grad():
        obs, _ = env.reset(seed=seed)
        yield _rgb(renderer.render(env.require_worlds()[0], world, **env.overlay(world)))
        fixed = np.zeros(env.action_dim) if policy is None else policy
        for _ in range(steps):
            if callable(fixed):
                action = fixed(obs)
            else:
                action = np.broadcast_to(np.asarray(fixed, float), (env.num_envs, env.action_dim))
            obs, *_ = env.step(action)
            state = env.require_worlds()[0]
            yield _rgb(renderer.render(state, world, **env.overlay(world)))


def _scenario_frames(
    scenario: Scenario,
    steps: int,
    policy: ScenarioPolicy | Sequence[float] | None,
    seed: int,
    world: int,
    batch_size: int,
    renderer: Renderer,
) -> Iterator[np.ndarray]:
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        state, drivers = scenario.sample(batch_size, generator=generator)
        yield _rgb(renderer.render(state, world, time=0.0))
        controls = partial(_scenario_controls, policy=policy)
        for index, result in enumerate(scenario.play(state, drivers, steps, controls, generator)):
            time = (index + 1) * scenario.dt
            yield _rgb(renderer.render(result.state, world, collided=result.collided, time=time))


def _rgb(frame: np.ndarray | None) -> np.ndarray:
    """A recording's renderer draws off-screen (``rgb_array``): every frame is an image."""
    assert frame is not None, "recording needs a renderer in rgb_array mode"
    return frame


def _scenario_controls(
    state: TrafficState, policy: ScenarioPolicy | Sequence[float] | None
) -> tuple[Tensor, Tensor]:
    if callable(policy):
        return policy(state)
    acceleration, steering = (0.0, 0.0) if policy is None else policy
    return torch.full_like(state.x, acceleration), torch.full_like(state.x, steering)
