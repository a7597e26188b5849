"""Lane occupancy under both lane-membership rules, leader search (both methods vs a brute-force
reference), gaps, collisions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from difftraffic.dynamics import step
from difftraffic.idm import IDMParams
from difftraffic.neighbors import (
    Neighbors,
    compute_neighbors,
    detect_collisions,
    find_leaders,
    lane_occupancy,
    leader_gap_and_speed,
)
from difftraffic.road import Road

METHODS = ("pairwise", "sorted")
LANE_WIDTH = 4.0


# --- brute-force references, written from the documented rules, one vehicle at a time ----------


def reference_lanes(y, heading, length, width, num_lanes, lane_width, membership) -> set[int]:
    """Lanes of the rectangle behind the front-bumper midpoint ``(., y)``: those it overlaps
    (``"body"``), or the one whose centre is nearest to its lateral centre (``"center"``)."""
    corners_y = [
        y + along * math.sin(heading) + across * math.cos(heading)
        for along in (0.0, -length)
        for across in (-width / 2, width / 2)
    ]
    low, high = min(corners_y), max(corners_y)
    if membership == "center":
        centre = (low + high) / 2
        return {min(range(num_lanes), key=lambda k: (abs(centre - (k + 0.5) * lane_width), -k))}
    return {k for k in range(num_lanes) if low < (k + 1) * lane_width and high > k * lane_width}


def reference_leaders(x, lanes, active, ring_length):
    """Per world: ``[leader index or None]`` from ``x: [N] floats``, ``lanes: [N] sets``."""
    n = len(x)
    leaders = []
    for i in range(n):
        best = None
        for j in range(n):
            if j == i or not (active[i] and active[j]) or not (lanes[i] & lanes[j]):
                continue
            if ring_length is None:
                if (x[j], j) <= (x[i], i):
                    continue
                key = (x[j], j)
            else:
                distance = (x[j] % ring_length - x[i] % ring_length) % ring_length
                if distance == 0 and j < i:
                    distance = ring_length
                key = (distance, j)
            if best is None or key < best[0]:
                best = (key, j)
        leaders.append(None if best is None else best[1])
    return leaders


def assert_matches_reference(neighbors: Neighbors, expected: list[list[int | None]]) -> None:
    for b, world in enumerate(expected):
        for i, lead in enumerate(world):
            assert bool(neighbors.has_leader[b, i]) == (lead is not None), (b, i, lead)
            assert int(neighbors.leader[b, i]) == (i if lead is None else lead), (b, i, lead)


# --- random configurations ----------------------------------------------------------------------

# Positions on a 0.25 m grid make exact ties (same x, same distance) frequent and keep every
# difference exact in float64, so the reference and the tensors agree on what a tie is.
grid = st.integers(-40, 480).map(lambda k: k * 0.25)


@st.composite
def configurations(draw, ring: bool, membership: str = "body"):
    num_lanes = draw(st.integers(1, 4))
    batch = draw(st.integers(1, 3))
    n = draw(st.integers(1, 14))
    ring_length = draw(st.integers(20, 120)) * 1.0 if ring else None
    shape = (batch, n)

    def floats(strategy):
        return [[draw(strategy) for _ in range(n)] for _ in range(batch)]

    lateral = st.integers(-2, 4 * num_lanes * 4 + 2).map(lambda k: k * 0.25)
    return {
        "road": Road(num_lanes, LANE_WIDTH, 20.0, ring_length, membership),
        "x": floats(grid),
        "y": floats(lateral),
        "heading": floats(st.sampled_from([0.0, 0.0, 0.0, 0.15, -0.3, 1.2])),
        "length": floats(st.sampled_from([4.0, 5.0, 12.0])),
        "width": floats(st.sampled_from([1.5, 2.0, 2.5])),
        "active": [
            [draw(st.booleans()) or draw(st.booleans()) for _ in range(n)] for _ in range(batch)
        ],
        "shape": shape,
    }


def check_against_reference(make_state, config) -> None:
    road = config["road"]
    state = make_state(
        config["x"],
        config["y"],
        heading=config["heading"],
        length=torch.tensor(config["length"]),
        width=torch.tensor(config["width"]),
        active=config["active"],
    )
    occupancy = lane_occupancy(state, road)
    expected = []
    for b in range(config["shape"][0]):
        lanes = [
            reference_lanes(y, h, ln, w, road.num_lanes, road.lane_width, road.lane_membership)
            if act
            else set()
            for y, h, ln, w, act in zip(
                config["y"][b],
                config["heading"][b],
                config["length"][b],
                config["width"][b],
                config["active"][b],
                strict=True,
            )
        ]
        got = [{k for k in range(road.num_lanes) if occupancy[b, i, k]} for i in range(len(lanes))]
        assert got == lanes
        expected.append(
            reference_leaders(config["x"][b], lanes, config["active"][b], road.ring_length)
        )
    for method in METHODS:
        assert_matches_reference(compute_neighbors(state, road, method), expected)


@settings(max_examples=150, deadline=None)
@given(config=configurations(ring=False))
def test_leaders_match_brute_force_on_straight_roads(make_state, config) -> None:
    check_against_reference(make_state, config)


@settings(max_examples=150, deadline=None)
@given(config=configurations(ring=True))
def test_leaders_match_brute_force_on_ring_roads(make_state, config) -> None:
    check_against_reference(make_state, config)


@settings(max_examples=150, deadline=None)
@given(config=st.booleans().flatmap(lambda ring: configurations(ring, membership="center")))
def test_leaders_match_brute_force_with_nearest_centre_membership(make_state, config) -> None:
    check_against_reference(make_state, config)


@pytest.mark.parametrize("ring_length", [None, 3000.0])
def test_many_vehicles_sorted_equals_pairwise_and_auto(ring_length) -> None:
    generator = torch.Generator().manual_seed(7)
    batch, n, lanes = 2, 1000, 3
    x = torch.rand(batch, n, generator=generator, dtype=torch.float64) * 5000.0
    x[:, :50] = torch.floor(x[:, :50] / 50.0) * 50.0  # some exact ties
    occupancy = torch.rand(batch, n, lanes, generator=generator) < 0.4
    occupancy[0, :100] = False  # inactive-like slots
    pairwise = find_leaders(x, occupancy, ring_length, "pairwise")
    for method in ("sorted", "auto"):
        other = find_leaders(x, occupancy, ring_length, method)
        assert torch.equal(other.leader, pairwise.leader)
        assert torch.equal(other.has_leader, pairwise.has_leader)
    assert pairwise.has_leader.sum() > n  # non-trivial


def test_a_thousand_vehicles_per_world_step_with_the_sorted_search(make_state) -> None:
    n = 1000
    x = torch.arange(n, dtype=torch.float64).flip(0).repeat(2, 1) * 40.0
    lanes = torch.arange(n) % 4
    state = make_state(x, (lanes * 4.0 + 2.0).to(torch.float64), [10.0] * n)
    result = step(state, Road.straight(num_lanes=4), IDMParams(v0=20.0), 0.1)
    assert bool(result.neighbors.has_leader[:, 4:].all())
    assert not result.neighbors.has_leader[:, :4].any()
    assert torch.equal(result.neighbors.leader[0, 4:], torch.arange(n - 4))


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(ValueError, match="method.*'nearest'"):
        find_leaders(torch.zeros(1, 2), torch.ones(1, 2, 1, dtype=torch.bool), None, "nearest")


# --- lanes and straddling -----------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_car_straddling_two_lanes_leads_both(make_state, method) -> None:
    road = Road.straight(num_lanes=2)
    # 0: straddles the boundary y = 4 (body 3..5); 1: lane 0 follower; 2: lane 1 follower;
    # 3: touches the boundary from below (body 2..4) and so occupies lane 0 only.
    state = make_state([50.0, 30.0, 20.0, 10.0], [4.0, 2.0, 6.0, 3.0])
    occupancy = lane_occupancy(state, road)
    assert occupancy[0].tolist() == [[True, True], [True, False], [False, True], [True, False]]
    neighbors = compute_neighbors(state, road, method)
    assert neighbors.leader[0, :3].tolist() == [0, 0, 0]
    assert neighbors.has_leader[0].tolist() == [False, True, True, True]
    assert int(neighbors.leader[0, 3]) == 1  # lane 0 only: the nearest lane-0 car ahead


@pytest.mark.parametrize("method", METHODS)
def test_straddler_leads_both_lanes_by_body_but_only_its_nearest_centre_lane(
    make_state, method
) -> None:
    # 0: straddles the 0/1 boundary (body y 3.5..5.5, centre 4.5 in lane 1); 1: lane-0 follower;
    # 2: lane-1 follower; 3: a lane-0 car far ahead of everyone.
    state = make_state([50.0, 30.0, 20.0, 80.0], [4.5, 2.0, 6.0, 2.0])
    body = compute_neighbors(state, Road.straight(num_lanes=2), method)
    assert body.leader[0].tolist() == [3, 0, 0, 3]
    assert body.has_leader[0].tolist() == [True, True, True, False]
    road = Road.straight(num_lanes=2, lane_membership="center")
    occupancy = lane_occupancy(state, road)
    assert occupancy[0].tolist() == [[False, True], [True, False], [False, True], [True, False]]
    center = compute_neighbors(state, road, method)
    # The lane-0 follower no longer sees the straddler: its leader is the farther lane-0 car, and
    # the straddler, alone in lane 1 ahead of 2, no longer follows that car.
    assert center.leader[0].tolist() == [0, 3, 0, 3]
    assert center.has_leader[0].tolist() == [False, True, True, False]


@pytest.mark.parametrize("method", METHODS)
def test_follower_in_the_straddlers_other_lane_has_no_leader_by_centre(make_state, method) -> None:
    state = make_state([50.0, 30.0], [4.5, 2.0])
    body = compute_neighbors(state, Road.straight(num_lanes=2), method)
    assert body.has_leader[0].tolist() == [False, True]
    center = compute_neighbors(state, Road.straight(num_lanes=2, lane_membership="center"), method)
    assert not center.has_leader.any()
    assert center.leader[0].tolist() == [0, 1]


@pytest.mark.parametrize("membership", ["body", "center"])
@pytest.mark.parametrize("method", METHODS)
def test_inactive_slots_are_invisible(make_state, method, membership) -> None:
    road = Road.ring(100.0, lane_membership=membership)
    state = make_state([10.0, 20.0, 30.0], [2.0] * 3, active=[True, False, True])
    assert not lane_occupancy(state, road)[0, 1].any()
    neighbors = compute_neighbors(state, road, method)
    assert neighbors.leader[0].tolist() == [2, 1, 0]
    assert neighbors.has_leader[0].tolist() == [True, False, True]


@pytest.mark.parametrize("method", METHODS)
def test_vehicle_alone_on_a_ring_has_no_leader(make_state, method) -> None:
    state = make_state([10.0, 30.0], [2.0, 6.0])
    neighbors = compute_neighbors(state, Road.ring(100.0, num_lanes=2), method)
    assert not neighbors.has_leader.any()
    assert neighbors.leader[0].tolist() == [0, 1]


def test_off_road_vehicle_occupies_no_lane(make_state) -> None:
    state = make_state([10.0, 10.0], [-3.0, 9.5])
    assert not lane_occupancy(state, Road.straight(num_lanes=2)).any()


def test_off_road_vehicle_belongs_to_the_nearest_edge_lane_by_centre(make_state) -> None:
    state = make_state([10.0, 10.0], [-3.0, 9.5])
    occupancy = lane_occupancy(state, Road.straight(num_lanes=2, lane_membership="center"))
    assert occupancy[0].tolist() == [[True, False], [False, True]]


# --- gaps and collisions -----------------------------------------------------------------------


def test_gap_and_leader_speed_on_straight_road(make_state) -> None:
    x = torch.tensor([[50.0, 30.0]], dtype=torch.float64, requires_grad=True)
    length = torch.tensor([[6.0, 5.0]], dtype=torch.float64, requires_grad=True)
    state = make_state(x, [2.0, 2.0], [8.0, 3.0], length=length)
    road = Road.straight()
    neighbors = compute_neighbors(state, road)
    gap, v_lead = leader_gap_and_speed(state, neighbors, road)
    assert gap[0, 1].item() == pytest.approx(50.0 - 6.0 - 30.0)
    assert v_lead[0, 1].item() == 8.0
    x_grad, length_grad = torch.autograd.grad(gap[0, 1], (x, length))
    assert x_grad.tolist() == [[1.0, -1.0]]
    assert length_grad.tolist() == [[-1.0, 0.0]]


def test_gap_wraps_around_the_ring(make_state) -> None:
    road = Road.ring(100.0)
    state = make_state([3.0, 95.0], [2.0, 2.0], [4.0, 6.0])
    neighbors = compute_neighbors(state, road)
    gap, v_lead = leader_gap_and_speed(state, neighbors, road)
    assert neighbors.leader[0].tolist() == [1, 0]
    assert gap[0].tolist() == pytest.approx([95.0 - 5.0 - 3.0, 103.0 - 5.0 - 95.0])
    assert v_lead[0].tolist() == [6.0, 4.0]


def test_leader_speed_is_its_speed_along_the_road(make_state) -> None:
    road = Road.straight()
    state = make_state([40.0, 20.0], [2.0, 2.0], [10.0, 5.0], heading=[0.3, 0.0])
    _, v_lead = leader_gap_and_speed(state, compute_neighbors(state, road), road)
    assert v_lead[0, 1].item() == pytest.approx(10.0 * math.cos(0.3))


def test_collision_marks_follower_and_leader(make_state) -> None:
    road = Road.straight(num_lanes=2)
    # 0 and 1 overlap in lane 0 (0's rear at 45 < 1's front at 47); 2 is far behind;
    # 3 overlaps 0 longitudinally but is in lane 1.
    state = make_state([50.0, 47.0, 10.0, 48.0], [2.0, 2.0, 2.0, 6.0])
    collided = detect_collisions(state, compute_neighbors(state, road), road)
    assert collided[0].tolist() == [True, True, False, False]


def test_sharing_a_lane_strip_side_by_side_is_a_collision_and_touching_bumpers_are_not(
    make_state,
) -> None:
    road = Road.straight(num_lanes=2)
    # Straddler (body y 2.9..4.9) beside a lane-1 car (body y 5..7): under "body" they share
    # lane 1 and overlap along it, so the IDM sees a negative gap and the flag agrees (one rule
    # for both), although the bodies are 0.1 m apart sideways. Under "center" the straddler is
    # in lane 0 only. Bumper to bumper at zero gap (2 and 3) is no overlap.
    state = make_state([50.0, 48.0, 20.0, 15.0], [3.9, 6.0, 2.0, 2.0])
    neighbors = compute_neighbors(state, road)
    collided = detect_collisions(state, neighbors, road)
    assert collided[0].tolist() == [True, True, False, False]
    gap, _ = leader_gap_and_speed(state, neighbors, road)
    assert collided[neighbors.has_leader & (gap < 0)].all()
    center = Road.straight(num_lanes=2, lane_membership="center")
    assert not detect_collisions(state, compute_neighbors(state, center), center).any()


def test_straddler_collides_across_the_boundary_by_body_but_not_by_centre(make_state) -> None:
    # 0 straddles (body y 3.5..5.5, centre in lane 1); 1 in lane 0 (body y 1.6..3.6) overlaps it
    # laterally by 0.1 m and longitudinally by 2 m (0's rear at 45, 1's front at 47).
    state = make_state([50.0, 47.0], [4.5, 2.6])
    body = Road.straight(num_lanes=2)
    assert detect_collisions(state, compute_neighbors(state, body), body).all()
    center = Road.straight(num_lanes=2, lane_membership="center")
    assert not detect_collisions(state, compute_neighbors(state, center), center).any()


def test_collision_across_the_ring_seam(make_state) -> None:
    road = Road.ring(100.0)
    state = make_state([2.0, 98.0, 50.0], [2.0, 2.0, 2.0])  # 0's rear is at -3 = 97 < 98
    collided = detect_collisions(state, compute_neighbors(state, road), road)
    assert collided[0].tolist() == [True, True, False]


def test_collisions_are_per_world(make_state) -> None:
    road = Road.straight()
    state = make_state([[50.0, 47.0], [50.0, 40.0]], [[2.0, 2.0], [2.0, 2.0]])
    collided = detect_collisions(state, compute_neighbors(state, road), road)
    assert collided.tolist() == [[True, True], [False, False]]
