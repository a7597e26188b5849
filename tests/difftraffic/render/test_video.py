"""Videos written and read back: frame count, size, colours; the one-call rollout recorder."""

from __future__ import annotations

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from difftraffic.render import RenderConfig, record_rollout, write_video
from difftraffic.road import Road
from difftraffic.scenario import ScenarioBuilder

COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]


def solid_frames(count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    return [
        np.full((height, width, 3), COLORS[i % len(COLORS)], dtype=np.uint8) for i in range(count)
    ]


def test_mp4_reads_back_with_frame_count_size_and_colours(tmp_path) -> None:
    path = write_video(iter(solid_frames(7)), tmp_path / "clip.mp4", fps=10)
    frames = list(iio.imiter(path, plugin="FFMPEG"))
    assert len(frames) == 7
    assert frames[0].shape == (48, 64, 3)
    for index, frame in enumerate(frames):
        assert np.abs(frame.astype(int) - COLORS[index % len(COLORS)]).max() < 12
    assert iio.improps(path, plugin="FFMPEG").shape[1:] == (48, 64, 3)


def test_gif_reads_back_with_frame_count_size_and_duration(tmp_path) -> None:
    path = write_video(solid_frames(5), tmp_path / "clip.gif", fps=20)
    with Image.open(path) as gif:
        assert gif.n_frames == 5
        assert gif.size == (64, 48)
        assert gif.info["duration"] == 50
        gif.seek(2)
        assert gif.convert("RGB").getpixel((3, 3)) == COLORS[2]


@pytest.mark.parametrize(
    ("name", "frames", "fps", "message"),
    [
        ("clip.avi", solid_frames(2), 10, r"must end in one of \.mp4, \.gif"),
        ("clip.mp4", solid_frames(2), 0, r"fps must be finite and > 0"),
        ("clip.gif", solid_frames(2), 60, r"fps must be in \(0, 50\]"),
        ("clip.mp4", solid_frames(2, 47, 64), 10, r"even height and width .* 47 x 64"),
        ("clip.gif", [], 10, "at least one frame"),
        ("clip.gif", solid_frames(1) + solid_frames(1, 40), 10, r"frame 1 must have"),
        ("clip.gif", [np.zeros((8, 8, 3), np.float32)], 10, r"frame 0 must be an \[H, W, 3\]"),
    ],
)
def test_bad_video_requests_fail_clearly(tmp_path, name, frames, fps, message) -> None:
    with pytest.raises(ValueError, match=message):
        write_video(frames, tmp_path / name, fps)


def test_record_rollout_of_a_scenario_writes_steps_plus_one_frames(tmp_path) -> None:
    scenario = (
        ScenarioBuilder(Road.ring(150.0, num_lanes=2), dt=0.1)
        .platoon(lane=0, count=5, spacing=25.0, speed=8.0)
        .vehicle(lane=1, x=40.0, speed=8.0, autonomous=True)
        .build()
    )
    config = RenderConfig(width=160, height=120, camera="road")
    path = record_rollout(
        scenario, tmp_path / "ring.mp4", steps=9, policy=(1.0, 0.0), config=config,
        progress=False,
    )  # fmt: skip
    frames = list(iio.imiter(path, plugin="FFMPEG"))
    assert len(frames) == 10
    assert frames[0].shape == (120, 160, 3)
    assert imageio_ffmpeg.count_frames_and_secs(str(path))[0] == 10
    assert not np.array_equal(frames[0], frames[-1])


def test_record_states_writes_the_states_a_user_simulated(tmp_path) -> None:
    from difftraffic import rollout
    from difftraffic.render import Renderer, record_states

    scenario = ScenarioBuilder(Road.ring(150.0), dt=0.1).platoon(0, 4, speed=8.0).build()
    state, drivers = scenario.sample(batch_size=2, seed=0)
    states, _ = rollout(state, scenario.road, drivers, scenario.dt, 7)
    config = RenderConfig(width=160, height=120, camera="road")
    path = record_states(states, scenario.road, tmp_path / "mine.gif", scenario.dt, world=1,
                         config=config, progress=False)  # fmt: skip
    frames = list(iio.imiter(path))
    assert len(frames) == len(states) == 8
    expected = Renderer(scenario.road, config).render(states[-1], 1, time=0.7)
    assert np.abs(frames[-1][..., :3].astype(int) - expected.astype(int)).mean() < 8
    with pytest.raises(ValueError, match=r"world must be an integer in \[0, 1\], got 2"):
        record_states(states, scenario.road, tmp_path / "x.gif", scenario.dt, world=2)
    with pytest.raises(ValueError, match="at least one TrafficState"):
        record_states([], scenario.road, tmp_path / "x.gif", scenario.dt)
