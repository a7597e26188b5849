"""The batched traffic state: every quantity a ``[B, N]`` tensor (B worlds, N vehicle slots)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import NamedTuple

import torch
from torch import Tensor

from difftraffic.errors import check_finite, check_non_negative, check_positive


@dataclass(frozen=True)
class TrafficState:
    """Positions, speeds and shapes of all vehicles in all worlds.

    ``(x, y)`` is the midpoint of the front bumper; the body is a ``length x width`` rectangle
    behind it along ``heading``. Human drivers keep ``heading = 0``.

    Attributes:
        x: ``[B, N]`` longitudinal position of the front bumper (m); arc length on a ring.
        y: ``[B, N]`` lateral position (m); lane ``k`` spans ``[k w, (k+1) w]``.
        v: ``[B, N]`` speed along the heading (m/s), >= 0.
        heading: ``[B, N]`` angle to the road direction (rad), counter-clockwise.
        length: ``[B, N]`` vehicle length (m), > 0.
        width: ``[B, N]`` vehicle width (m), > 0.
        is_av: ``[B, N]`` bool, True for autonomous vehicles (driven by actions).
        active: ``[B, N]`` bool, False for unused slots (worlds may hold different counts).
    """

    x: Tensor
    y: Tensor
    v: Tensor
    heading: Tensor
    length: Tensor
    width: Tensor
    is_av: Tensor
    active: Tensor

    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    @property
    def num_vehicles(self) -> int:
        return self.x.shape[1]

    @property
    def is_human(self) -> Tensor:
        """``[B, N]`` bool: active human-driven vehicles."""
        return self.active & ~self.is_av

    def replace(self, **changes: Tensor) -> TrafficState:
        """A copy with some fields replaced."""
        return replace(self, **changes)

    def detach(self) -> TrafficState:
        """The same state cut from the autograd graph."""
        return TrafficState(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> TrafficState:
        """The state on another device and/or floating dtype (masks stay bool)."""
        moved = {}
        for f in fields(self):
            tensor = getattr(self, f.name)
            target_dtype = dtype if tensor.is_floating_point() else None
            moved[f.name] = tensor.to(device=device, dtype=target_dtype)
        return TrafficState(**moved)

    def index_worlds(self, index: Tensor | slice | int) -> TrafficState:
        """The sub-batch of worlds selected by ``index`` (keeps the ``[B', N]`` shape)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return TrafficState(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def validate(self) -> None:
        """Raise ``ValueError`` on inconsistent shapes, dtypes or non-physical values."""
        shape = self.x.shape
        if self.x.dim() != 2:
            raise ValueError(f"TrafficState.x must have shape [B, N], got {tuple(shape)}")
        for f in fields(self):
            tensor = getattr(self, f.name)
            if tensor.shape != shape:
                raise ValueError(
                    f"TrafficState.{f.name} must have shape {tuple(shape)} like x, "
                    f"got {tuple(tensor.shape)}"
                )
            if f.name in ("is_av", "active"):
                if tensor.dtype != torch.bool:
                    raise ValueError(f"TrafficState.{f.name} must be bool, got {tensor.dtype}")
            elif tensor.dtype != self.x.dtype or tensor.device != self.x.device:
                raise ValueError(
                    f"TrafficState.{f.name} must have x's dtype {self.x.dtype} and device "
                    f"{self.x.device}, got {tensor.dtype} on {tensor.device}"
                )
        active = self.active
        for name in ("x", "y", "heading"):
            check_finite(f"TrafficState.{name}", getattr(self, name)[active])
        check_non_negative("TrafficState.v", self.v[active], "m/s")
        check_positive("TrafficState.length", self.length[active], "m")
        check_positive("TrafficState.width", self.width[active], "m")


def longitudinal_extent(
    x: Tensor, length: Tensor, width: Tensor, cos_h: Tensor, sin_h: Tensor
) -> tuple[Tensor, Tensor]:
    """``(rear_x, front_x)``, each ``[B, N]`` (m): the bodies' extent along the road.

    Args as in :meth:`BodyBox.of`.
    """
    center_x = x - 0.5 * length * cos_h
    half_x = 0.5 * (length * cos_h.abs() + width * sin_h.abs())
    return center_x - half_x, center_x + half_x


class BodyBox(NamedTuple):
    """Axis-aligned bounding box of every vehicle body, each field ``[B, N]`` (m).

    For ``heading = 0`` the box is exactly ``[x - length, x] x [y - width/2, y + width/2]``.
    :meth:`of` takes the cosine and sine of the heading, so that a step computes them once for
    integration and geometry.
    """

    rear_x: Tensor
    front_x: Tensor
    low_y: Tensor
    high_y: Tensor

    @classmethod
    def of(
        cls, x: Tensor, y: Tensor, length: Tensor, width: Tensor, cos_h: Tensor, sin_h: Tensor
    ) -> BodyBox:
        """Box of bodies with front-bumper midpoint ``(x, y)`` and heading ``(cos_h, sin_h)``.

        Args:
            x, y: ``[B, N]`` front-bumper midpoint (m).
            length, width: ``[B, N]`` body size (m).
            cos_h, sin_h: ``[B, N]`` cosine and sine of the heading.
        """
        rear_x, front_x = longitudinal_extent(x, length, width, cos_h, sin_h)
        center_y = y - 0.5 * length * sin_h
        half_y = 0.5 * (length * sin_h.abs() + width * cos_h.abs())
        return cls(rear_x, front_x, center_y - half_y, center_y + half_y)

    @classmethod
    def of_state(cls, state: TrafficState) -> BodyBox:
        """Box of every body of ``state``."""
        return cls.of(
            state.x,
            state.y,
            state.length,
            state.width,
            torch.cos(state.heading),
            torch.sin(state.heading),
        )


def body_extents(state: TrafficState) -> BodyBox:
    """Axis-aligned bounding box ``(rear_x, front_x, low_y, high_y)`` of every body of ``state``,
    each ``[B, N]`` (m); see :class:`BodyBox`."""
    return BodyBox.of_state(state)
