"""A top-down pygame view of one world of a batched :class:`~difftraffic.state.TrafficState`.

pygame is imported on first use, never at import time; when no display is present the dummy
video driver is selected first, so ``rgb_array`` rendering works on headless machines.
Rendering reads detached copies of the state under ``torch.no_grad()`` and never changes it.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal, TypedDict

import numpy as np
import torch
from torch import Tensor

from difftraffic.neighbors import compute_neighbors, detect_collisions
from difftraffic.render import palette
from difftraffic.render.camera import Camera
from difftraffic.road import Road
from difftraffic.state import TrafficState

RenderMode = Literal["rgb_array", "human"]


class Overlay(TypedDict):
    """The text overlay of a frame (keyword arguments of :meth:`Renderer.render`)."""

    time: float
    reward: float | None
    target_speed: float | None


RENDER_MODES: tuple[str, ...] = ("rgb_array", "human")

DASH_LENGTH = 3.0
"""Length (m) of a dash of the marking between two lanes."""
DASH_PERIOD = 12.0
"""Distance (m) from the start of one dash to the start of the next."""
MARKING_WIDTH = 0.15
"""Width (m) of lane markings (drawn at least one pixel wide)."""
FOLLOW_ZOOM = 8.0
"""Default zoom (px/m) of a following camera."""


def display_available() -> bool:
    """Whether a window can be shown: on Linux and BSD, whether an X11 or Wayland display is set."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def load_pygame() -> ModuleType:
    """Import pygame (choosing the dummy video driver when no display is present) and its fonts."""
    if not display_available() and not os.environ.get("SDL_VIDEODRIVER"):
        os.environ["SDL_VIDEODRIVER"] = "dummy"
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    pygame.font.init()
    return pygame


@dataclass(frozen=True)
class RenderConfig:
    """What the renderer shows and how.

    Attributes:
        width, height: image size (px), >= 64 each. Even sizes can be encoded as MP4.
        camera: ``"follow"`` centres on a vehicle; ``"road"`` frames the whole road (the full
            ring, or on a straight road every lane and the stretch the vehicles occupy).
        follow: vehicle slot the camera follows; ``None``: the world's first autonomous vehicle
            (the first vehicle if there is none).
        zoom: scale (px/m), > 0; ``None``: 8 px/m when following, fitted to the image when
            framing the road.
        color_by_speed: colour human drivers by speed (with a legend) instead of yellow.
        speed_range: ``(low, high)`` speeds (m/s) at the ends of the speed colours; ``None``:
            ``(0, road speed limit)``.
        overlay: draw the text panel (time, mean human speed, target speed, reward).
    """

    width: int = 960
    height: int = 540
    camera: Literal["follow", "road"] = "follow"
    follow: int | None = None
    zoom: float | None = None
    color_by_speed: bool = False
    speed_range: tuple[float, float] | None = None
    overlay: bool = True

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 64:
                raise ValueError(f"RenderConfig.{name} must be an integer >= 64 px, got {value!r}")
        if self.camera not in ("follow", "road"):
            raise ValueError(f"RenderConfig.camera must be 'follow' or 'road', got {self.camera!r}")
        if self.zoom is not None and not (self.zoom > 0 and math.isfinite(self.zoom)):
            raise ValueError(f"RenderConfig.zoom must be finite and > 0 px/m, got {self.zoom!r}")
        if self.speed_range is not None and not self.speed_range[0] < self.speed_range[1]:
            raise ValueError(
                f"RenderConfig.speed_range must be (low, high) m/s with low < high, "
                f"got {self.speed_range!r}"
            )


@dataclass(frozen=True)
class WorldSnapshot:
    """One world's vehicles as numpy arrays ``[N]`` (SI units), detached from autograd."""

    x: np.ndarray
    y: np.ndarray
    v: np.ndarray
    heading: np.ndarray
    length: np.ndarray
    width: np.ndarray
    is_av: np.ndarray
    active: np.ndarray
    collided: np.ndarray

    @classmethod
    def of(
        cls, state: TrafficState, road: Road, world: int, collided: Tensor | None
    ) -> WorldSnapshot:
        """World ``world`` of ``state``; ``collided`` (``[B, N]`` bool) is computed from the
        state's overlaps when ``None``."""
        if not isinstance(world, int) or not 0 <= world < state.batch_size:
            raise ValueError(
                f"world must be an integer in [0, {state.batch_size - 1}], got {world!r}"
            )
        with torch.no_grad():
            one = state.index_worlds(world).detach()
            if collided is None:
                hits = detect_collisions(one, compute_neighbors(one, road), road)[0]
            else:
                hits = collided.detach()[world]

            def numpy(tensor: Tensor) -> np.ndarray:
                return tensor[0].cpu().numpy().astype(float)

            return cls(
                x=numpy(one.x),
                y=numpy(one.y),
                v=numpy(one.v),
                heading=numpy(one.heading),
                length=numpy(one.length),
                width=numpy(one.width),
                is_av=one.is_av[0].cpu().numpy(),
                active=one.active[0].cpu().numpy(),
                collided=hits.cpu().numpy().astype(bool),
            )

    def corners(self) -> tuple[np.ndarray, np.ndarray]:
        """Road coordinates (m) of each body's corners, ``x`` and ``y`` each ``[N, 4]``: front
        left, front right, rear right, rear left."""
        forward = np.stack([np.cos(self.heading), np.sin(self.heading)], -1)
        left = np.stack([-forward[:, 1], forward[:, 0]], -1)
        front = np.stack([self.x, self.y], -1)
        half_width = (0.5 * self.width)[:, None] * left
        rear = front - self.length[:, None] * forward
        corners = np.stack(
            [front + half_width, front - half_width, rear - half_width, rear + half_width], 1
        )
        return corners[..., 0], corners[..., 1]


def lane_markings(road: Road) -> list[tuple[float, float, float, bool]]:
    """The lines of a straight road as ``(y, x_from, x_to, dashed)`` (m): dashed between two
    lanes where both go on, solid along the road's edges, including the edge a lane's end
    leaves (see ``Road.lane_ends``)."""
    ends = road.lane_ends or (math.inf,) * road.num_lanes
    markings = []
    for boundary in range(road.num_lanes + 1):
        y = boundary * road.lane_width
        below = ends[boundary - 1] if boundary > 0 else -math.inf
        above = ends[boundary] if boundary < road.num_lanes else -math.inf
        both, either = min(below, above), max(below, above)
        if both > -math.inf:
            markings.append((y, -math.inf, both, True))
        if either > both:
            markings.append((y, both, either, False))
    return markings


class Renderer:
    """Draws one world of a state: road, lane markings, vehicles, a text overlay.

    Args:
        road: the road the states live on.
        config: a :class:`RenderConfig`; defaults when ``None``.
        mode: ``"rgb_array"`` (:meth:`render` returns ``[H, W, 3]`` uint8) or ``"human"``
            (:meth:`render` shows the frame in a window and returns ``None``).
        fps: frame rate (frames/s) at which a ``"human"`` window is paced, > 0.

    Example::

        renderer = Renderer(scenario.road)
        frame = renderer.render(state)              # [540, 960, 3] uint8, world 0
    """

    def __init__(
        self,
        road: Road,
        config: RenderConfig | None = None,
        mode: RenderMode = "rgb_array",
        fps: float = 30.0,
    ) -> None:
        if mode not in RENDER_MODES:
            raise ValueError(f"mode must be one of {list(RENDER_MODES)}, got {mode!r}")
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be finite and > 0 frames/s, got {fps!r}")
        self.road = road
        self.config = config or RenderConfig()
        self.mode = mode
        self.fps = fps
        self._pygame = load_pygame()
        self._surface = self._pygame.Surface((self.config.width, self.config.height))
        self._font = self._pygame.font.Font(None, max(12, round(22 * self.config.height / 540)))
        self._window: Any = None
        self._clock: Any = None

    def render(
        self,
        state: TrafficState,
        world: int = 0,
        *,
        collided: Tensor | None = None,
        time: float | None = None,
        reward: float | None = None,
        target_speed: float | None = None,
    ) -> np.ndarray | None:
        """Draw world ``world`` of ``state`` (shapes ``[B, N]``).

        Args:
            state: the state to draw; read only, gradients untouched.
            world: which world of the batch, in ``[0, B)``.
            collided: ``[B, N]`` bool vehicles to mark red (e.g. ``StepResult.collided``);
                ``None``: vehicles whose bodies overlap a leader's in ``state``.
            time: simulated time (s) for the overlay; omitted when ``None``.
            reward: the step reward for the overlay; omitted when ``None``.
            target_speed: the target speed (m/s) for the overlay; omitted when ``None``.

        Returns:
            ``[height, width, 3]`` uint8 RGB in ``"rgb_array"`` mode; ``None`` in ``"human"``.
        """
        snapshot = WorldSnapshot.of(state, self.road, world, collided)
        camera = self._camera(snapshot)
        self._surface.fill(palette.BACKGROUND)
        self._draw_road(camera)
        self._draw_vehicles(camera, snapshot)
        if self.config.overlay:
            lines = self._overlay_lines(
                snapshot, world, state.batch_size, time, reward, target_speed
            )
            self._draw_panel(lines)
        if self.config.color_by_speed:
            self._draw_legend()
        if self.mode == "human":
            self._show()
            return None
        pixels = self._pygame.image.tobytes(self._surface, "RGB")
        return np.frombuffer(pixels, np.uint8).reshape(self.config.height, self.config.width, 3)

    def close(self) -> None:
        """Close the window of ``"human"`` mode (nothing to do in ``"rgb_array"`` mode)."""
        if self._window is not None:
            self._pygame.display.quit()
            self._window = None

    # -- camera -------------------------------------------------------------------------------

    def _camera(self, snapshot: WorldSnapshot) -> Camera:
        cfg = self.config
        if cfg.camera == "road":
            rear = snapshot.x - snapshot.length
            x_range = (float(rear[snapshot.active].min()), float(snapshot.x[snapshot.active].max()))
            return Camera.framing(self.road, cfg.width, cfg.height, x_range, cfg.zoom)
        target = self._followed_vehicle(snapshot)
        half_length = 0.5 * snapshot.length[target]
        center_x = snapshot.x[target] - half_length * math.cos(snapshot.heading[target])
        center_y = snapshot.y[target] - half_length * math.sin(snapshot.heading[target])
        zoom = cfg.zoom if cfg.zoom is not None else FOLLOW_ZOOM
        return Camera.following(self.road, cfg.width, cfg.height, zoom, center_x, center_y)

    def _followed_vehicle(self, snapshot: WorldSnapshot) -> int:
        follow = self.config.follow
        count = len(snapshot.x)
        if follow is None:
            autonomous = np.flatnonzero(snapshot.is_av & snapshot.active)
            return (
                int(autonomous[0]) if len(autonomous) else int(np.flatnonzero(snapshot.active)[0])
            )
        if not isinstance(follow, int) or not 0 <= follow < count or not snapshot.active[follow]:
            raise ValueError(
                f"RenderConfig.follow must be the slot of an active vehicle in [0, {count - 1}], "
                f"got {follow!r}"
            )
        return follow

    # -- drawing ------------------------------------------------------------------------------

    def _draw_road(self, camera: Camera) -> None:
        draw = self._pygame.draw
        road = self.road
        if road.ring_length is not None:
            center = camera.plane_to_screen(np.zeros(()), np.zeros(()))
            inner_radius = road.ring_length / (2.0 * math.pi) * camera.zoom
            outer_radius = inner_radius + road.width * camera.zoom
            draw.circle(self._surface, palette.ASPHALT, center, outer_radius)
            draw.circle(self._surface, palette.BACKGROUND, center, inner_radius)
        else:
            x_start, x_end = camera.visible_x_range()
            corners = camera.to_screen(
                np.array([x_start, x_end, x_end, x_start]),
                np.array([0.0, 0.0, road.width, road.width]),
            )
            draw.polygon(self._surface, palette.ASPHALT, corners)
            self._draw_lane_ends(camera)
        line_width = max(1, round(MARKING_WIDTH * camera.zoom))
        visible_start, visible_end = camera.visible_x_range()
        for y, x_from, x_to, dashed in lane_markings(road):
            x_from, x_to = max(x_from, visible_start), min(x_to, visible_end)
            if x_from >= x_to:
                continue
            if not dashed:
                self._draw_line(camera.polyline(x_from, x_to, y), line_width)
                continue
            for dash_start, dash_end in self._dashes(camera):
                dash_start, dash_end = max(dash_start, x_from), min(dash_end, x_to)
                if dash_start < dash_end:
                    self._draw_line(camera.polyline(dash_start, dash_end, y), line_width)

    def _draw_lane_ends(self, camera: Camera) -> None:
        """Grass over each ended lane beyond its end, and a line across the lane at the end."""
        road = self.road
        _, visible_end = camera.visible_x_range()
        line_width = max(1, round(MARKING_WIDTH * camera.zoom))
        for lane, end in enumerate(road.lane_ends or ()):
            if not math.isfinite(end) or end >= visible_end:
                continue
            low, high = lane * road.lane_width, (lane + 1) * road.lane_width
            corners = camera.to_screen(
                np.array([end, visible_end, visible_end, end]), np.array([low, low, high, high])
            )
            self._pygame.draw.polygon(self._surface, palette.BACKGROUND, corners)
            cap = camera.to_screen(np.array([end, end]), np.array([low, high]))
            self._draw_line(cap, line_width)

    def _dashes(self, camera: Camera) -> list[tuple[float, float]]:
        """Road ``x`` intervals (m) of the dashes between lanes, anchored to the road so that
        they scroll past a following camera."""
        x_start, x_end = camera.visible_x_range()
        first = math.floor(x_start / DASH_PERIOD)
        last = math.ceil(x_end / DASH_PERIOD)
        return [
            (k * DASH_PERIOD, min(k * DASH_PERIOD + DASH_LENGTH, x_end))
            for k in range(first, last)
            if k * DASH_PERIOD < x_end
        ]

    def _draw_line(self, points: np.ndarray, width: int) -> None:
        self._pygame.draw.lines(self._surface, palette.MARKING, False, points, width)

    def _draw_vehicles(self, camera: Camera, snapshot: WorldSnapshot) -> None:
        corner_x, corner_y = snapshot.corners()
        polygons = camera.to_screen(corner_x, corner_y)
        colors = self._vehicle_colors(snapshot)
        width, height = self.config.width, self.config.height
        # Autonomous vehicles are drawn last so that they stay visible when bodies overlap.
        for index in np.argsort(snapshot.is_av, kind="stable"):
            polygon = polygons[index]
            on_screen = (
                polygon[:, 0].max() >= 0
                and polygon[:, 0].min() < width
                and polygon[:, 1].max() >= 0
                and polygon[:, 1].min() < height
            )
            if snapshot.active[index] and on_screen:
                self._pygame.draw.polygon(self._surface, colors[index], polygon)
                self._pygame.draw.polygon(self._surface, palette.OUTLINE, polygon, 1)

    def _vehicle_colors(self, snapshot: WorldSnapshot) -> list[palette.Color]:
        count = len(snapshot.x)
        if self.config.color_by_speed:
            low, high = self._speed_range()
            human = [
                (int(r), int(g), int(b)) for r, g, b in palette.speed_colors(snapshot.v, low, high)
            ]
        else:
            human = [palette.HUMAN] * count
        return [
            palette.COLLIDED
            if snapshot.collided[i]
            else palette.AUTONOMOUS
            if snapshot.is_av[i]
            else human[i]
            for i in range(count)
        ]

    def _speed_range(self) -> tuple[float, float]:
        return self.config.speed_range or (0.0, self.road.speed_limit)

    def _overlay_lines(
        self,
        snapshot: WorldSnapshot,
        world: int,
        batch_size: int,
        time: float | None,
        reward: float | None,
        target_speed: float | None,
    ) -> list[str]:
        lines = []
        if time is not None:
            lines.append(f"t = {time:.2f} s")
        humans = snapshot.active & ~snapshot.is_av
        if humans.any():
            lines.append(f"mean human speed {snapshot.v[humans].mean():.2f} m/s")
        if target_speed is not None:
            lines.append(f"target speed {target_speed:.2f} m/s")
        if reward is not None:
            lines.append(f"reward {reward:+.3f}")
        if batch_size > 1:
            lines.append(f"world {world} of {batch_size}")
        return lines

    def _draw_panel(self, lines: list[str]) -> None:
        if not lines:
            return
        texts = [self._font.render(line, True, palette.TEXT) for line in lines]
        line_height = self._font.get_linesize()
        panel = self._pygame.Surface(
            (max(t.get_width() for t in texts) + 16, line_height * len(texts) + 12),
            self._pygame.SRCALPHA,
        )
        panel.fill((*palette.PANEL, 170))
        for row, text in enumerate(texts):
            panel.blit(text, (8, 6 + row * line_height))
        self._surface.blit(panel, (8, 8))

    def _draw_legend(self) -> None:
        low, high = self._speed_range()
        bar_width, bar_height, margin = 180, 12, 10
        top = self.config.height - margin - bar_height
        colors = palette.speed_colors(np.linspace(low, high, bar_width), low, high)
        for column, rgb in enumerate(colors):
            self._pygame.draw.line(
                self._surface,
                tuple(int(c) for c in rgb),
                (margin + column, top),
                (margin + column, top + bar_height - 1),
            )
        label = self._font.render(
            f"human speed {low:g} - {high:g} m/s", True, palette.TEXT, palette.PANEL
        )
        self._surface.blit(label, (margin, top - label.get_height() - 2))

    def _show(self) -> None:
        pygame = self._pygame
        if self._window is None:
            if not display_available():
                warnings.warn(
                    "render_mode='human' without a display: the window is not visible "
                    "(SDL_VIDEODRIVER=dummy); use 'rgb_array' to get frames",
                    RuntimeWarning,
                    stacklevel=3,
                )
            pygame.display.init()
            self._window = pygame.display.set_mode((self.config.width, self.config.height))
            pygame.display.set_caption("difftraffic")
            self._clock = pygame.time.Clock()
        pygame.event.pump()
        self._window.blit(self._surface, (0, 0))
        pygame.display.flip()
        self._clock.tick(self.fps)
