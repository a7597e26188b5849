"""Colours of the renderer (RGB, 0-255) and the speed colour map."""

from __future__ import annotations

import numpy as np

Color = tuple[int, int, int]

BACKGROUND: Color = (58, 99, 62)
ASPHALT: Color = (72, 74, 80)
MARKING: Color = (236, 236, 236)
HUMAN: Color = (246, 196, 34)
AUTONOMOUS: Color = (36, 110, 236)
COLLIDED: Color = (222, 38, 38)
OUTLINE: Color = (20, 20, 20)
TEXT: Color = (245, 245, 245)
PANEL: Color = (16, 18, 22)

SPEED_MAP_STOPS = np.array(
    [
        (68, 1, 84),
        (59, 82, 139),
        (33, 145, 140),
        (94, 201, 98),
        (253, 231, 37),
    ],
    dtype=float,
)
"""Anchor colours of the speed map (viridis), from slowest to fastest, evenly spaced."""


def speed_colors(speed: np.ndarray, low: float, high: float) -> np.ndarray:
    """``[N, 3]`` uint8 colours of ``[N]`` speeds (m/s) on the speed map; speeds outside
    ``[low, high]`` take the end colours."""
    fraction = np.clip((np.asarray(speed, float) - low) / (high - low), 0.0, 1.0)
    position = fraction * (len(SPEED_MAP_STOPS) - 1)
    lower = np.minimum(np.floor(position).astype(int), len(SPEED_MAP_STOPS) - 2)
    weight = (position - lower)[:, None]
    blend = (1.0 - weight) * SPEED_MAP_STOPS[lower] + weight * SPEED_MAP_STOPS[lower + 1]
    colors: np.ndarray = np.rint(blend).astype(np.uint8)
    return colors
