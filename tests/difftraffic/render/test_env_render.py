"""render() of the environments: Gymnasium's checker, frames after episode ends, lazy pygame."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import gymnasium
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import difftraffic
from difftraffic.render import palette

ENV_ID = "difftraffic/PaceCar-10lane-v0"


def test_import_is_lazy_and_rendering_works_without_a_display() -> None:
    code = (
        "import os, sys, difftraffic, difftraffic.render\n"
        "print('pygame' in sys.modules)\n"
        "env = difftraffic.PaceCarEnv('1lane', render_mode='rgb_array', seed=0)\n"
        "env.reset()\n"
        "print(env.render().shape, os.environ['SDL_VIDEODRIVER'])\n"
    )
    headless = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    headless["SDL_VIDEODRIVER"] = ""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=headless
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["False", "(540, 960, 3) dummy"]


def test_single_env_passes_gymnasium_check_env() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(gymnasium.make(ENV_ID).unwrapped)


def test_rgb_array_frame_shows_the_pace_car_blue_at_the_centre() -> None:
    env = gymnasium.make(ENV_ID, render_mode="rgb_array")
    env.reset(seed=3)
    frame = env.render()
    assert frame.shape == (540, 960, 3) and frame.dtype == np.uint8
    road = env.unwrapped.vector_env.task.road
    pace_y = float(env.unwrapped.vector_env.state.y[0, 0])
    row = round(540 / 2 - (pace_y - road.width / 2) * 8.0)
    assert (frame[row - 3 : row + 4, 477:484] == palette.AUTONOMOUS).all()
    env.close()


def test_render_after_the_last_step_of_an_episode_returns_a_frame() -> None:
    env = gymnasium.make(ENV_ID, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    ended = False
    for _ in range(1000):
        *_, terminated, truncated, _ = env.step(np.array([-1.0, 0.0], dtype=np.float32))
        frame = env.render()
        if terminated or truncated:
            ended = True
            break
    assert ended
    assert frame is not None and frame.shape == (540, 960, 3)
    env.close()


def test_record_video_wrapper_writes_an_episode(tmp_path) -> None:
    folder = tmp_path / "videos"
    env = gymnasium.wrappers.RecordVideo(
        gymnasium.make(ENV_ID, render_mode="rgb_array"), str(folder), disable_logger=True
    )
    env.reset(seed=0)
    for _ in range(5):
        env.step(env.action_space.sample())
    frame_shape = env.render().shape
    env.close()
    (video,) = folder.glob("*.mp4")
    frames = iio.imread(video)
    assert frames.shape[0] >= 5 and frames.shape[1:] == frame_shape


def test_vector_env_renders_the_chosen_world_and_warns_without_a_mode() -> None:
    env = difftraffic.PaceCarEnv("4lane", num_envs=8, seed=1, render_mode="rgb_array")
    env.reset()
    lanes = env.task.road.nearest_lane(env.state.y[:, 0])
    first, other = 0, int(torch.nonzero(lanes != lanes[0])[0])
    env.render_world = first
    frame_first = env.render()
    env.render_world = other
    frame_other = env.render()
    assert not np.array_equal(frame_first, frame_other)
    env.close()
    silent = difftraffic.PaceCarEnv("1lane", num_envs=1, seed=1)
    silent.reset()
    with pytest.warns(UserWarning, match="render_mode=None"):
        assert silent.render() is None
