"""Frames to a video file: MP4 (H.264, through imageio-ffmpeg's bundled ffmpeg) or GIF (Pillow)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".gif")
GIF_MAX_FPS = 50.0
"""GIF frame durations are whole hundredths of a second, and viewers slow down frames shorter
than 20 ms; subsample the frames for a higher rate."""


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: float) -> Path:
    """Write ``frames`` to ``path``, encoded by the suffix: ``.mp4`` (H.264, yuv420p) or ``.gif``.

    Frames are consumed one at a time, so a generator keeps memory flat for long MP4s.

    Args:
        frames: ``[H, W, 3]`` uint8 RGB images, all the same size; MP4 needs even ``H`` and ``W``.
        path: the output file; missing parent folders are created.
        fps: frames per second, > 0 (at most 50 for GIF).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: unknown suffix, bad ``fps``, no frames, or a frame of the wrong shape or type.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(
            f"path must end in one of {', '.join(VIDEO_SUFFIXES)} (the suffix picks the "
            f"encoder), got {str(path)!r}"
        )
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be finite and > 0 frames/s, got {fps!r}")
    if suffix == ".gif" and fps > GIF_MAX_FPS:
        raise ValueError(
            f"fps must be in (0, {GIF_MAX_FPS:g}] frames/s for a GIF, got {fps!r}; keep every "
            f"k-th frame and divide fps by k"
        )
    checked = _checked_frames(frames, require_even=suffix == ".mp4")
    first = next(checked, None)
    if first is None:
        raise ValueError("frames must hold at least one frame, got none")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".mp4":
        _write_mp4(first, checked, path, fps)
    else:
        _write_gif(first, checked, path, fps)
    return path


def _checked_frames(frames: Iterable[np.ndarray], require_even: bool) -> Iterator[np.ndarray]:
    shape = None
    for index, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"frame {index} must be an [H, W, 3] uint8 array, "
                f"got shape {frame.shape} of {frame.dtype}"
            )
        if shape is None:
            shape = frame.shape
            if require_even and (shape[0] % 2 or shape[1] % 2):
                raise ValueError(
                    f"frames must have even height and width for H.264 MP4, got "
                    f"{shape[0]} x {shape[1]} px; use an even renderer size or a .gif path"
                )
        elif frame.shape != shape:
            raise ValueError(
                f"frame {index} must have the first frame's shape {shape}, got {frame.shape}"
            )
        yield np.ascontiguousarray(frame)


def _write_mp4(first: np.ndarray, rest: Iterator[np.ndarray], path: Path, fps: float) -> None:
    import imageio_ffmpeg

    height, width = first.shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        macro_block_size=1,
        ffmpeg_log_level="error",
        output_params=["-movflags", "+faststart"],
    )
    writer.send(None)
    try:
        writer.send(first)
        for frame in rest:
            writer.send(frame)
    finally:
        writer.close()


def _write_gif(first: np.ndarray, rest: Iterator[np.ndarray], path: Path, fps: float) -> None:
    from PIL import Image

    Image.fromarray(first).save(
        path,
        save_all=True,
        append_images=(Image.fromarray(frame) for frame in rest),
        duration=round(1000.0 / fps),
        loop=0,
        optimize=True,
    )
