"""TrafficState: validation, conversions, and the body bounding box."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from difftraffic.state import TrafficState, body_extents


@pytest.fixture
def state(make_state) -> TrafficState:
    return make_state(
        [[30.0, 10.0, 0.0], [25.0, 5.0, 0.0]],
        [[2.0, 6.0, 2.0], [2.0, 2.0, 2.0]],
        [[5.0, 3.0, 0.0], [1.0, 2.0, 0.0]],
        is_av=[[True, False, False], [False, False, False]],
        active=[[True, True, False], [True, True, True]],
    )


def test_valid_state_passes_and_reports_sizes(state) -> None:
    state.validate()
    assert (state.batch_size, state.num_vehicles) == (2, 3)
    assert state.is_human.tolist() == [[False, True, False], [True, True, True]]


def test_to_changes_floats_but_keeps_masks_bool(state) -> None:
    moved = state.to(dtype=torch.float32)
    assert moved.x.dtype == moved.length.dtype == torch.float32
    assert moved.is_av.dtype == moved.active.dtype == torch.bool
    moved.validate()


def test_detach_and_index_worlds(make_state) -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    state = make_state(x, [2.0, 2.0])
    assert not state.detach().x.requires_grad
    second = state.index_worlds(1)
    assert second.x.shape == (1, 2) and second.x.tolist() == [[3.0, 4.0]]
    assert state.index_worlds(torch.tensor([1, 0])).x.tolist() == [[3.0, 4.0], [1.0, 2.0]]


@pytest.mark.parametrize("field", ["x", "y", "heading"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_active_values_rejected(state, field, bad) -> None:
    values = getattr(state, field).clone()
    values[1, 2] = bad
    with pytest.raises(ValueError, match=re.escape(f"TrafficState.{field}")) as info:
        state.replace(**{field: values}).validate()
    assert repr(bad) in str(info.value)


def test_non_finite_values_in_inactive_slots_allowed(state) -> None:
    x = state.x.clone()
    x[0, 2] = math.nan
    state.replace(x=x).validate()


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("v", -0.5),
        ("v", math.nan),
        ("length", 0.0),
        ("length", -5.0),
        ("width", 0.0),
        ("width", math.inf),
    ],
)
def test_non_physical_values_rejected(state, field, bad) -> None:
    values = getattr(state, field).clone()
    values[0, 1] = bad
    with pytest.raises(ValueError, match=re.escape(f"TrafficState.{field}")) as info:
        state.replace(**{field: values}).validate()
    assert repr(bad) in str(info.value)


def test_wrong_shapes_and_dtypes_rejected(state) -> None:
    with pytest.raises(ValueError, match=r"TrafficState\.x must have shape \[B, N\].*\(6,\)"):
        state.replace(x=state.x.reshape(-1)).validate()
    with pytest.raises(ValueError, match=r"TrafficState\.v must have shape \(2, 3\).*\(2, 2\)"):
        state.replace(v=state.v[:, :2]).validate()
    with pytest.raises(ValueError, match=r"TrafficState\.active must be bool.*float"):
        state.replace(active=state.active.double()).validate()
    with pytest.raises(ValueError, match=r"TrafficState\.y must have x's dtype.*float32"):
        state.replace(y=state.y.float()).validate()


def test_extents_of_a_car_aligned_with_the_road(make_state) -> None:
    state = make_state([50.0], [6.0], length=4.5, width=1.8)
    rear, front, low, high = (t.item() for t in body_extents(state))
    assert (rear, front) == pytest.approx((45.5, 50.0))
    assert (low, high) == pytest.approx((5.1, 6.9))


def test_extents_of_a_car_turned_sideways(make_state) -> None:
    state = make_state([50.0], [6.0], heading=[math.pi / 2], length=4.0, width=2.0)
    rear, front, low, high = (t.item() for t in body_extents(state))
    assert (rear, front) == pytest.approx((49.0, 51.0))
    assert (low, high) == pytest.approx((2.0, 6.0))


@settings(max_examples=100, deadline=None)
@given(
    heading=st.floats(-math.pi, math.pi),
    length=st.floats(1.0, 20.0),
    width=st.floats(0.5, 3.0),
)
def test_extents_are_the_box_around_the_rotated_body(make_state, heading, length, width) -> None:
    state = make_state([10.0], [5.0], heading=[heading], length=length, width=width)
    rear, front, low, high = (t.item() for t in body_extents(state))
    cos_h, sin_h = math.cos(heading), math.sin(heading)
    corners = [
        (10.0 + a * cos_h - c * sin_h, 5.0 + a * sin_h + c * cos_h)
        for a in (0.0, -length)
        for c in (-width / 2, width / 2)
    ]
    assert rear == pytest.approx(min(p[0] for p in corners), abs=1e-9)
    assert front == pytest.approx(max(p[0] for p in corners), abs=1e-9)
    assert low == pytest.approx(min(p[1] for p in corners), abs=1e-9)
    assert high == pytest.approx(max(p[1] for p in corners), abs=1e-9)
