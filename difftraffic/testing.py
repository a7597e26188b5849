"""Property-based testing of traffic code: hypothesis strategies and a gradient checker.

Install with the ``testing`` extra (``pip install difftraffic[testing]``, which adds hypothesis).
The strategies draw what the simulator accepts, including near-collisions:

* :func:`drivers`: valid :class:`IDMParams` (floats in the ranges the IDM is defined on),
* :func:`roads`: straight or ring roads of 1-4 lanes, under either lane-membership rule,
* :func:`scenarios`: platoons on such a road with gaps from ``min_gap`` (near-collisions) to 40 m,
  speeds 0-40 m/s and optional autonomous vehicles.

:func:`fronts_passed` and :func:`shares_a_lane` are an ``O(N^2)`` reference for the collision
test: which vehicles passed through which within a step, in which shared lanes.

:func:`check_gradient` compares autograd against central differences in float64 for any scalar a
user computes from a rollout. The simulator's leader relations and collision flags are discrete
(found outside autograd), so a perturbation that changes one of them has no derivative to match:
the function may return those events beside its value, and entries whose ``+eps`` and ``-eps``
runs saw different events are reported as *discontinuous* instead of as mismatches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st
from torch import Tensor

from difftraffic.dynamics import StepResult
from difftraffic.idm import IDMParams
from difftraffic.neighbors import lane_occupancy
from difftraffic.road import Road
from difftraffic.scenario import Driver, Scenario, ScenarioBuilder
from difftraffic.state import TrafficState

__all__ = [
    "CALIBRATED_DRIVER_RANGES",
    "DRIVER_RANGES",
    "GradientCheck",
    "check_gradient",
    "drivers",
    "events",
    "fronts_passed",
    "roads",
    "scenarios",
    "shares_a_lane",
]

SPEED = (0.0, 40.0)
"""Initial speeds (m/s) the strategies draw from."""
MAX_GAP = 40.0
"""Largest bumper gap (m) :func:`scenarios` draws."""
DRIVER_RANGES = {
    "v0": (1.0, 40.0),
    "T": (0.1, 3.0),
    "a": (0.1, 10.0),
    "b": (0.1, 10.0),
    "delta": (1.0, 8.0),
    "s0": (0.0, 5.0),
}
"""The IDM parameter ranges the strategies draw from by default: everything the IDM is defined on
(SI units; see :class:`IDMParams`)."""
CALIBRATED_DRIVER_RANGES = {
    "v0": (5.0, 40.0),
    "T": (0.5, 3.0),
    "a": (0.3, 4.0),
    "b": (1.0, 9.0),
    "delta": (2.0, 6.0),
    "s0": (1.0, 5.0),
}
"""Ranges of calibrated human drivers (Treiber and Kesting's tables, widened). Within them the
discrete IDM at ``dt = 0.1 s`` is stable; stiffer drivers (headway near 0.1 s, ``s0 = 0``)
make it oscillate at centimetre gaps, and the derivative of such a trajectory grows geometrically
(see ``docs/simulator.md``)."""


def drivers() -> st.SearchStrategy[IDMParams]:
    """Valid IDM parameters (plain floats) from :data:`DRIVER_RANGES`."""
    return st.builds(IDMParams, **{k: st.floats(*r) for k, r in DRIVER_RANGES.items()})


def roads(
    max_lanes: int = 4, ring: bool | None = None, min_ring_length: float = 200.0
) -> st.SearchStrategy[Road]:
    """Roads of 1..``max_lanes`` lanes, 3-5 m wide, under either lane-membership rule;
    ``ring=None`` draws straight roads and rings of ``min_ring_length`` to 3 times that."""
    rings = st.just(ring) if ring is not None else st.booleans()
    return st.builds(
        lambda lanes, width, is_ring, length, membership: Road(
            lanes, width, 30.0, length if is_ring else None, membership
        ),
        st.integers(1, max_lanes),
        st.floats(3.0, 5.0),
        rings,
        st.floats(min_ring_length, 3 * min_ring_length),
        st.sampled_from(["body", "center"]),
    )


@st.composite
def scenarios(
    draw: st.DrawFn,
    road: st.SearchStrategy[Road] | None = None,
    max_per_lane: int = 4,
    min_gap: float = 0.05,
    autonomous: bool = True,
    dt: float = 0.1,
    driver_ranges: dict[str, tuple[float, float]] | None = None,
) -> Scenario:
    """Scenarios on a drawn road: in every lane 1..``max_per_lane`` vehicles with bumper gaps in
    ``[min_gap, 40]`` m (near-collisions included), speeds in :data:`SPEED`, drivers drawn from
    ``driver_ranges`` (default :data:`DRIVER_RANGES`) and, with ``autonomous``, each vehicle
    autonomous with probability 1/5. The default road strategy's rings are long enough for the
    platoons."""
    room = max_per_lane * (ScenarioBuilder.length + MAX_GAP) + MAX_GAP
    drawn_road = draw(road if road is not None else roads(min_ring_length=room))
    builder = ScenarioBuilder(drawn_road, dt=dt)
    for lane in range(drawn_road.num_lanes):
        x = 0.0
        for _ in range(draw(st.integers(1, max_per_lane))):
            ranges = DRIVER_RANGES if driver_ranges is None else driver_ranges
            settings: dict[str, Any] = {k: draw(st.floats(*r)) for k, r in ranges.items()}
            driver = Driver(**settings)
            builder.vehicle(
                lane,
                x,
                draw(st.floats(*SPEED)),
                autonomous=autonomous and draw(st.integers(0, 4)) == 0,
                driver=driver,
            )
            x += builder.length + draw(st.floats(min_gap, MAX_GAP))
    return builder.build()


def events(result: StepResult) -> Tensor:
    """The discrete outcome of a step, ``[2, B, N]``: every vehicle's leader and collision flag.
    Stack these over a rollout and return them beside the value given to :func:`check_gradient`."""
    return torch.stack([result.neighbors.leader, result.collided.long()])


def shares_a_lane(state: TrafficState, road: Road) -> Tensor:
    """``[B, N, N]`` bool: pairs of vehicles sharing a lane under ``road.lane_membership``."""
    lanes = lane_occupancy(state, road)
    return (lanes.unsqueeze(2) & lanes.unsqueeze(1)).any(-1)


def fronts_passed(before: TrafficState, after: TrafficState, road: Road, dt: float) -> Tensor:
    """``[B, N, N]`` bool, ``[b, i, j]``: vehicle ``i``'s front passed vehicle ``j``'s during the
    step from ``before`` to ``after`` (which took ``dt`` seconds).

    The simulator's own displacement along the road (``v cos(heading) dt`` of the new state,
    unwrapped) from the start positions: ``j`` was ahead of ``i`` by ``(x, index)`` and ``i``
    ends further along; on a ring also ``i`` ending more than a ring length further along
    than ``j``. A pair that shares a lane at either end of the step and passed without
    ``StepResult.collided`` flagging either vehicle went through one another unseen: a
    reference (``O(N^2)``) for the simulator's swept collision test.
    """
    x = road.wrap(before.x)
    end = x + torch.where(after.active, after.v * torch.cos(after.heading) * dt, 0.0)
    index = torch.arange(x.shape[1], device=x.device)
    j_ahead = (x.unsqueeze(1) > x.unsqueeze(2)) | (
        (x.unsqueeze(1) == x.unsqueeze(2)) & (index.unsqueeze(0) > index.unsqueeze(1))
    )
    end_i, end_j = end.unsqueeze(2), end.unsqueeze(1)
    passed = j_ahead & (end_i > end_j)
    if road.ring_length is not None:
        passed |= (end_i > end_j + road.ring_length) & (index.unsqueeze(0) != index.unsqueeze(1))
    return passed


@dataclass(frozen=True)
class GradientCheck:
    """What :func:`check_gradient` found, one entry per input element (flattened).

    Attributes:
        autograd, finite_difference: ``[P]`` the two gradients.
        discontinuous: ``[P]`` bool, the central difference crossed a discrete event (a leader
            change or a collision): the gradient is knowingly partial there and is not compared.
        mismatch: ``[P]`` bool, a differentiable entry where the two disagree.
    """

    autograd: Tensor
    finite_difference: Tensor
    discontinuous: Tensor
    mismatch: Tensor

    @property
    def ok(self) -> bool:
        """No differentiable entry disagrees."""
        return not bool(self.mismatch.any())

    def __str__(self) -> str:
        compared = int((~self.discontinuous).sum())
        lines = [
            f"{compared} of {self.autograd.numel()} entries compared, "
            f"{int(self.discontinuous.sum())} discontinuous (a leader or collision changed), "
            f"{int(self.mismatch.sum())} mismatched"
        ]
        for i in torch.nonzero(self.mismatch).flatten()[:5].tolist():
            lines.append(
                f"  entry {i}: autograd {self.autograd[i].item():.6e}, "
                f"finite difference {self.finite_difference[i].item():.6e}"
            )
        return "\n".join(lines)


def check_gradient(
    fn: Callable[[Tensor], Tensor | tuple[Tensor, Tensor]],
    inputs: Tensor,
    eps: float = 1e-6,
    rtol: float = 1e-4,
    atol: float = 1e-6,
) -> GradientCheck:
    """Autograd against central differences of ``fn`` at ``inputs`` (float64).

    Args:
        fn: maps the inputs to a scalar, or to ``(scalar, events)`` with ``events`` any integer
            tensor of discrete outcomes (e.g. :func:`events` of every step, stacked).
        inputs: a float64 tensor; each element is perturbed by ``+-eps`` in turn (``2 P``
            evaluations, so keep ``P`` and the rollout small).
        eps: the perturbation.
        rtol, atol: the tolerance ``|autograd - fd| <= atol + rtol |fd|``.

    Raises:
        ValueError: when ``inputs`` is not float64 or ``fn`` does not return a scalar.
    """
    if not isinstance(inputs, Tensor) or inputs.dtype != torch.float64:
        raise ValueError(
            f"inputs must be a float64 tensor (finite differences need it), got "
            f"{getattr(inputs, 'dtype', type(inputs).__name__)}"
        )

    def evaluate(x: Tensor) -> tuple[Tensor, Tensor | None]:
        out = fn(x)
        value, found = out if isinstance(out, tuple) else (out, None)
        if value.numel() != 1:
            raise ValueError(f"fn must return a scalar, got shape {tuple(value.shape)}")
        return value.reshape(()), found

    point = inputs.detach().clone().requires_grad_(True)
    value, _ = evaluate(point)
    # A value with no autograd path to the inputs has a zero gradient.
    (grad,) = (
        torch.autograd.grad(value, point, allow_unused=True) if value.requires_grad else (None,)
    )
    autograd = torch.zeros_like(point) if grad is None else grad
    flat = inputs.detach().reshape(-1)
    fd = torch.empty_like(flat)
    discontinuous = torch.zeros(flat.shape, dtype=torch.bool)
    with torch.no_grad():
        for i in range(flat.numel()):
            plus, minus = flat.clone(), flat.clone()
            plus[i] += eps
            minus[i] -= eps
            high, high_events = evaluate(plus.reshape(inputs.shape))
            low, low_events = evaluate(minus.reshape(inputs.shape))
            fd[i] = (high - low) / (2 * eps)
            if high_events is not None and low_events is not None:
                discontinuous[i] = not torch.equal(high_events, low_events)
    autograd = autograd.reshape(-1).detach()
    mismatch = ~discontinuous & ((autograd - fd).abs() > atol + rtol * fd.abs()).cpu()
    return GradientCheck(autograd, fd, discontinuous, mismatch)
