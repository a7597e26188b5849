"""Road geometry: constructors, lanes of a lateral position, occupancy and lane membership,
wrapping, validation."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from difftraffic.road import Road


def test_straight_and_ring_constructors() -> None:
    straight = Road.straight(num_lanes=3, lane_width=3.5, speed_limit=25.0)
    assert (straight.num_lanes, straight.lane_width, straight.speed_limit) == (3, 3.5, 25.0)
    assert not straight.is_ring and straight.ring_length is None
    assert straight.width == pytest.approx(10.5)
    ring = Road.ring(230.0, num_lanes=2)
    assert ring.is_ring and ring.ring_length == 230.0
    assert (ring.num_lanes, ring.lane_width, ring.speed_limit) == (2, 4.0, 20.0)
    assert straight.lane_membership == ring.lane_membership == "body"
    assert Road.straight(2, lane_membership="center").lane_membership == "center"
    assert Road.ring(230.0, 2, lane_membership="center").lane_membership == "center"


def test_lane_centres() -> None:
    road = Road.straight(num_lanes=3, lane_width=4.0)
    assert road.lane_center(0) == 2.0
    assert road.lane_center(2) == 10.0
    assert road.lane_centers(torch.zeros(1, dtype=torch.float64)).tolist() == [2.0, 6.0, 10.0]
    assert road.lane_centers(torch.zeros(1, dtype=torch.float32)).dtype == torch.float32


def test_nearest_lane_and_distance_to_its_centre() -> None:
    road = Road.straight(num_lanes=3)
    y = torch.tensor(
        [-1.0, 0.5, 3.9, 4.0, 6.5, 11.9, 30.0], dtype=torch.float64, requires_grad=True
    )
    assert road.nearest_lane(y).tolist() == [0, 0, 0, 1, 1, 2, 2]
    distance = road.distance_to_nearest_lane_center(y)
    assert distance.tolist() == pytest.approx([3.0, 1.5, 1.9, 2.0, 0.5, 1.9, 20.0])
    (grad,) = torch.autograd.grad(distance.sum(), y)
    assert grad.tolist() == [-1.0, -1.0, 1.0, -1.0, 1.0, 1.0, 1.0]


def test_body_membership_is_the_overlapped_lanes() -> None:
    road = Road.straight(num_lanes=3)
    assert road.lane_membership == "body"
    low = torch.tensor([3.0, 2.0, -5.0])
    high = torch.tensor([5.0, 4.0, -1.0])
    assert torch.equal(road.member_lanes(low, high), road.occupied_lanes(low, high))


def test_center_membership_is_the_single_lane_of_the_nearest_centre() -> None:
    road = Road.straight(num_lanes=3, lane_membership="center")
    low = torch.tensor([[3.0, 3.5, 1.0, 3.0, -5.0, 0.5, 11.5]], dtype=torch.float64)
    high = low + torch.tensor([[2.0, 2.0, 2.0, 1.0, 4.0, 10.5, 2.0]], dtype=torch.float64)
    member = road.member_lanes(low, high)
    assert member.shape == (1, 7, 3) and member.dtype == torch.bool
    assert member[0].tolist() == [
        [False, True, False],  # centred on the 0/1 boundary: the lane above
        [False, True, False],  # straddles 0 and 1, centre 4.5 in lane 1
        [True, False, False],  # inside lane 0
        [True, False, False],  # touches the boundary from below, centre 3.5
        [True, False, False],  # off the road below: the nearest (edge) lane
        [False, True, False],  # wider than two lanes, centre 5.75
        [False, False, True],  # sticks out above, centre 12.5
    ]


def test_occupied_lanes_counts_overlap_not_touching() -> None:
    road = Road.straight(num_lanes=3)
    low = torch.tensor([1.0, 3.0, 2.0, 4.0, -5.0, 0.5])
    high = torch.tensor([3.0, 5.0, 4.0, 6.0, -1.0, 11.0])
    assert road.occupied_lanes(low, high).tolist() == [
        [True, False, False],  # inside lane 0
        [True, True, False],  # straddles 0 and 1
        [True, False, False],  # touches the 0/1 boundary from below
        [False, True, False],  # touches it from above
        [False, False, False],  # off the road
        [True, True, True],  # wider than two lanes
    ]


@settings(max_examples=100, deadline=None)
@given(
    lanes=st.integers(1, 6),
    width=st.floats(2.0, 5.0),
    center=st.floats(-5.0, 35.0),
    half=st.floats(0.1, 6.0),
)
def test_occupied_lanes_are_the_overlapped_intervals(lanes, width, center, half) -> None:
    road = Road.straight(num_lanes=lanes, lane_width=width)
    low = torch.tensor([center - half], dtype=torch.float64)
    high = torch.tensor([center + half], dtype=torch.float64)
    got = road.occupied_lanes(low, high)[0].tolist()
    low_f, high_f = low.item(), high.item()
    assert got == [low_f < (k + 1) * width and high_f > k * width for k in range(lanes)]


def test_wrap() -> None:
    ring = Road.ring(100.0)
    x = torch.tensor([-1.0, 0.0, 99.5, 100.0, 250.0])
    assert ring.wrap(x).tolist() == [99.0, 0.0, 99.5, 0.0, 50.0]
    assert torch.equal(Road.straight().wrap(x), x)


BAD_ROADS = [
    (dict(num_lanes=0), "Road.num_lanes", "0"),
    (dict(num_lanes=-2), "Road.num_lanes", "-2"),
    (dict(num_lanes=1.5), "Road.num_lanes", "1.5"),
    (dict(num_lanes="2"), "Road.num_lanes", "'2'"),
    (dict(lane_width=0.0), "Road.lane_width", "0.0"),
    (dict(lane_width=-3.0), "Road.lane_width", "-3.0"),
    (dict(lane_width=math.nan), "Road.lane_width", "nan"),
    (dict(speed_limit=0.0), "Road.speed_limit", "0.0"),
    (dict(speed_limit=math.inf), "Road.speed_limit", "inf"),
    (dict(ring_length=0.0), "Road.ring_length", "0.0"),
    (dict(ring_length=-50.0), "Road.ring_length", "-50.0"),
    (dict(ring_length=math.inf), "Road.ring_length", "inf"),
    (dict(lane_membership="nearest"), "Road.lane_membership", "'nearest'"),
    (dict(lane_membership="Center"), "Road.lane_membership", "'Center'"),
    (dict(lane_membership=None), "Road.lane_membership", "None"),
]


@pytest.mark.parametrize(("kwargs", "name", "value"), BAD_ROADS)
def test_bad_road_parameters_raise_naming_them(kwargs, name, value) -> None:
    with pytest.raises(ValueError, match=re.escape(name)) as info:
        Road(**kwargs)
    assert value in str(info.value)


def test_bad_ring_via_classmethod() -> None:
    with pytest.raises(ValueError, match=r"Road\.ring_length.*-1\.0"):
        Road.ring(-1.0)
    with pytest.raises(ValueError, match=r"Road\.lane_width.*0\.0"):
        Road.straight(lane_width=0.0)


def test_bad_lane_membership_lists_the_valid_rules() -> None:
    message = "Road.lane_membership must be one of 'body', 'center', got 'lateral'"
    with pytest.raises(ValueError, match=re.escape(message)):
        Road.ring(100.0, lane_membership="lateral")
