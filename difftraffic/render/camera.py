"""Where things go on screen: road coordinates (m) to pixel coordinates.

Road coordinates are the simulator's: ``x`` along the road (arc length on a ring), ``y`` across it
(lane ``k`` spans ``[k w, (k + 1) w]``). They are first mapped to a flat *plane* (m): a straight
road is the plane itself; a ring is bent into a circle travelled counter-clockwise, whose inner
edge (``y = road.width``, the left of the direction of travel) has circumference ``ring_length``.
The plane is then scaled by ``zoom`` (px/m) about the camera centre, with ``y`` pointing up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from difftraffic.road import Road

RING_SAMPLE_SPACING = 1.0
"""Distance (m) between the points of a polyline that follows a ring's curve."""


def to_plane(road: Road, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Road coordinates ``(x, y)`` (m, any shape) to plane coordinates (m, same shape)."""
    if road.ring_length is None:
        return x, y
    inner_radius = road.ring_length / (2.0 * math.pi)
    radius = inner_radius + (road.width - y)
    angle = 2.0 * math.pi * x / road.ring_length
    return radius * np.cos(angle), radius * np.sin(angle)


@dataclass(frozen=True)
class Camera:
    """A view of ``road``: the plane point ``center`` (m) at the middle of a ``width x height``
    pixel image, ``zoom`` pixels per metre.

    Attributes:
        road: the road being viewed.
        width, height: image size (px).
        zoom: scale (px/m), > 0.
        center: plane coordinates (m) shown at the image centre.
    """

    road: Road
    width: int
    height: int
    zoom: float
    center: tuple[float, float]

    def __post_init__(self) -> None:
        if not (self.zoom > 0 and math.isfinite(self.zoom)):
            raise ValueError(f"zoom must be finite and > 0 px/m, got {self.zoom!r}")

    def to_screen(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Road coordinates (m, shape ``S``) to pixel coordinates ``S + (2,)`` (column, row)."""
        return self.plane_to_screen(
            *to_plane(self.road, np.asarray(x, float), np.asarray(y, float))
        )

    def plane_to_screen(self, plane_x: np.ndarray, plane_y: np.ndarray) -> np.ndarray:
        """Plane coordinates (m, shape ``S``) to pixel coordinates ``S + (2,)`` (column, row)."""
        column = 0.5 * self.width + (np.asarray(plane_x, float) - self.center[0]) * self.zoom
        row = 0.5 * self.height - (np.asarray(plane_y, float) - self.center[1]) * self.zoom
        return np.stack([column, row], axis=-1)

    def visible_x_range(self) -> tuple[float, float]:
        """The stretch of road ``x`` (m) worth drawing: the whole ring, or what the image spans
        of a straight road."""
        if self.road.ring_length is not None:
            return 0.0, self.road.ring_length
        half_span = 0.5 * self.width / self.zoom
        return self.center[0] - half_span, self.center[0] + half_span

    def polyline(self, x_start: float, x_end: float, y: float) -> np.ndarray:
        """``[P, 2]`` pixel points of the line at lateral position ``y`` (m) from ``x_start`` to
        ``x_end`` (m): two points on a straight road, one per ``RING_SAMPLE_SPACING`` on a ring."""
        count = 2
        if self.road.ring_length is not None:
            count = max(2, math.ceil((x_end - x_start) / RING_SAMPLE_SPACING) + 1)
        xs = np.linspace(x_start, x_end, count)
        return self.to_screen(xs, np.full_like(xs, y))

    @classmethod
    def following(
        cls, road: Road, width: int, height: int, zoom: float, x: float, y: float
    ) -> Camera:
        """A camera centred on road point ``(x, y)`` (m). On a straight road that fits the image
        height the road's centre line stays at the image's middle row, so lanes do not bob."""
        if road.ring_length is None and road.width * zoom <= height:
            y = 0.5 * road.width
        plane_x, plane_y = to_plane(road, np.asarray(x, float), np.asarray(y, float))
        return cls(road, width, height, zoom, (float(plane_x), float(plane_y)))

    @classmethod
    def framing(
        cls,
        road: Road,
        width: int,
        height: int,
        x_range: tuple[float, float],
        zoom: float | None = None,
        margin: float = 5.0,
    ) -> Camera:
        """A camera on the whole road: the full ring, or on a straight road the stretch
        ``x_range`` (m) and every lane, each with ``margin`` (m) around it. ``zoom=None`` fits it
        to the image."""
        if road.ring_length is not None:
            outer_radius = road.ring_length / (2.0 * math.pi) + road.width + margin
            span_x = span_y = 2.0 * outer_radius
            center = (0.0, 0.0)
        else:
            span_x = x_range[1] - x_range[0] + 2.0 * margin
            span_y = road.width + 2.0 * margin
            center = (0.5 * (x_range[0] + x_range[1]), 0.5 * road.width)
        if zoom is None:
            zoom = min(width / span_x, height / span_y)
        return cls(road, width, height, zoom, center)
