"""Road geometry: straight open roads and ring roads with parallel lanes.

Coordinates: ``x`` runs along the road (m), ``y`` across it (m). Lane ``k`` (0-based) spans
``y in [k * lane_width, (k + 1) * lane_width]``, so its centre is at ``(k + 0.5) * lane_width``.
On a ring road ``x`` is the arc length, periodic with period ``ring_length``.

Lane membership (which lanes a vehicle is a leader candidate in) follows one of two rules,
``Road.lane_membership``:

* ``"body"`` (default): every lane that the body's bounding box overlaps laterally, so a car
  straddling a boundary belongs to both lanes;
* ``"center"``: only the lane whose centre is nearest to the body's lateral centre, as in the
  GI-PPO authors' simulator; a car straddling a boundary belongs to one lane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args, overload

import torch
from torch import Tensor

from difftraffic.errors import check_choice, check_positive

LaneMembership = Literal["body", "center"]
LANE_MEMBERSHIPS: tuple[str, ...] = get_args(LaneMembership)
"""The lane-membership rules (see the module docstring)."""


def check_lane_membership(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is one of :data:`LANE_MEMBERSHIPS`."""
    check_choice(name, value, LANE_MEMBERSHIPS)


@dataclass(frozen=True)
class Road:
    """A road of ``num_lanes`` parallel lanes.

    Attributes:
        num_lanes: number of lanes, >= 1.
        lane_width: lane width (m), > 0. Default 4 m.
        speed_limit: speed limit (m/s), > 0; the default desired speed of human drivers.
        ring_length: circumference (m) of a ring road; ``None`` for a straight open road.
        lane_membership: which lanes a vehicle is a leader candidate in: ``"body"`` (every lane
            its body overlaps) or ``"center"`` (the lane of the nearest centre only; the GI-PPO
            authors' rule). See :meth:`member_lanes`.
        lane_ends: per lane, the ``x`` (m) where it ends, ``math.inf`` for a lane that goes on;
            ``None`` (default): every lane goes on. A straight road only, and at least one
            lane must go on. Human drivers treat a lane's end as a standing obstacle and leave
            the lane before it (:mod:`difftraffic.lane_change`); see :meth:`lane_end_x`.
    """

    num_lanes: int = 1
    lane_width: float = 4.0
    speed_limit: float = 20.0
    ring_length: float | None = None
    lane_membership: LaneMembership = "body"
    lane_ends: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.num_lanes, int) or self.num_lanes < 1:
            raise ValueError(f"Road.num_lanes must be an integer >= 1, got {self.num_lanes!r}")
        check_positive("Road.lane_width", self.lane_width, "m")
        check_positive("Road.speed_limit", self.speed_limit, "m/s")
        if self.ring_length is not None:
            check_positive("Road.ring_length", self.ring_length, "m")
        check_lane_membership("Road.lane_membership", self.lane_membership)
        if self.lane_ends is not None:
            self._check_lane_ends(self.lane_ends)

    def _check_lane_ends(self, ends: tuple[float, ...]) -> None:
        if not isinstance(ends, tuple) or len(ends) != self.num_lanes:
            raise ValueError(
                f"Road.lane_ends must be a tuple of {self.num_lanes} positions (m), one per "
                f"lane (math.inf for a lane that goes on), got {ends!r}"
            )
        for lane, end in enumerate(ends):
            if not isinstance(end, (int, float)) or math.isnan(end) or end <= 0:
                raise ValueError(
                    f"Road.lane_ends[{lane}] must be a position > 0 m or math.inf, got {end!r}"
                )
        if self.ring_length is not None:
            raise ValueError("Road.lane_ends needs a straight road; a ring road has no ends")
        if all(math.isfinite(end) for end in ends):
            raise ValueError(
                f"Road.lane_ends must leave at least one lane going on (math.inf), got {ends!r}"
            )

    @classmethod
    def straight(
        cls,
        num_lanes: int = 1,
        lane_width: float = 4.0,
        speed_limit: float = 20.0,
        lane_membership: LaneMembership = "body",
        lane_ends: tuple[float, ...] | None = None,
    ) -> Road:
        """A straight open road (no wrap-around); ``lane_ends`` as in :class:`Road`."""
        return cls(num_lanes, lane_width, speed_limit, None, lane_membership, lane_ends)

    @classmethod
    def ring(
        cls,
        length: float,
        num_lanes: int = 1,
        lane_width: float = 4.0,
        speed_limit: float = 20.0,
        lane_membership: LaneMembership = "body",
    ) -> Road:
        """A ring road of circumference ``length`` (m)."""
        return cls(num_lanes, lane_width, speed_limit, length, lane_membership)

    @property
    def is_ring(self) -> bool:
        return self.ring_length is not None

    @property
    def width(self) -> float:
        """Total road width (m)."""
        return self.num_lanes * self.lane_width

    @overload
    def lane_center(self, lane: int) -> float: ...
    @overload
    def lane_center(self, lane: Tensor) -> Tensor: ...
    def lane_center(self, lane: Tensor | int) -> Tensor | float:
        """Lateral position ``y`` (m) of the centre of ``lane``."""
        return (lane + 0.5) * self.lane_width

    def lane_centers(self, like: Tensor) -> Tensor:
        """``[L]`` lane-centre ``y`` (m), with ``like``'s dtype and device."""
        lanes = torch.arange(self.num_lanes, dtype=like.dtype, device=like.device)
        return (lanes + 0.5) * self.lane_width

    def nearest_lane(self, y: Tensor) -> Tensor:
        """Index (long) of the lane whose centre is nearest to ``y``; same shape as ``y``."""
        lane = torch.floor(y.detach() / self.lane_width).long()
        return lane.clamp(0, self.num_lanes - 1)

    def distance_to_nearest_lane_center(self, y: Tensor) -> Tensor:
        """``|y - centre of the nearest lane|`` (m), differentiable in ``y``."""
        return (y - self.lane_center(self.nearest_lane(y)).to(y.dtype)).abs()

    def occupied_lanes(self, y_low: Tensor, y_high: Tensor) -> Tensor:
        """``[..., L]`` bool: lanes that the lateral extent ``(y_low, y_high)`` overlaps.

        Touching a lane boundary does not count as occupying the lane beyond it.
        """
        lanes = torch.arange(self.num_lanes, dtype=y_low.dtype, device=y_low.device)
        lane_low = lanes * self.lane_width
        lane_high = lane_low + self.lane_width
        return (y_low.unsqueeze(-1) < lane_high) & (y_high.unsqueeze(-1) > lane_low)

    def member_lanes(self, y_low: Tensor, y_high: Tensor) -> Tensor:
        """``[..., L]`` bool: lanes a body of lateral extent ``(y_low, y_high)`` belongs to.

        ``"body"``: :meth:`occupied_lanes`. ``"center"``: exactly one lane, the
        :meth:`nearest_lane` of the extent's midpoint (for a body aligned with the road, its
        ``y``); a midpoint on a boundary belongs to the lane above it, and a body off the road
        to the edge lane nearest to it.
        """
        if self.lane_membership == "body":
            return self.occupied_lanes(y_low, y_high)
        lane = self.nearest_lane(0.5 * (y_low + y_high))
        lanes = torch.arange(self.num_lanes, device=lane.device)
        return lane.unsqueeze(-1) == lanes

    def lane_end_x(self, like: Tensor) -> Tensor:
        """``[L]`` where each lane ends (m; ``inf`` for one that goes on), with ``like``'s dtype
        and device."""
        ends = self.lane_ends or (math.inf,) * self.num_lanes
        return torch.tensor(ends, dtype=like.dtype, device=like.device)

    def wrap(self, x: Tensor) -> Tensor:
        """``x`` reduced to ``[0, ring_length)`` on a ring road; unchanged on a straight road."""
        if self.ring_length is None:
            return x
        return torch.remainder(x, self.ring_length)
