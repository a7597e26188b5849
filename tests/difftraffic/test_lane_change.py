"""MOBIL lane changes: the lane search against a brute-force reference, the decision's safety
and incentive rules, the lateral motion, what the gradient carries, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from difftraffic import (
    MOBIL,
    Driver,
    IDMParams,
    KraussDriver,
    Road,
    ScenarioBuilder,
    rollout,
    step,
    validate_step_inputs,
)
from difftraffic.idm import idm_acceleration
from difftraffic.lane_change import lane_neighbors, mobil_directions
from difftraffic.neighbors import lane_end_ahead, lane_occupancy
from difftraffic.state import TrafficState

DT = 0.1


def reference_lane_neighbors(x, occupancy, ring_length):
    """Per world, lane and vehicle: the nearest member ahead and behind in ``(x, index)`` order,
    wrapping around on a ring, one pair at a time (``None`` when there is none)."""
    batch, n, lanes = occupancy.shape
    ahead = [[[None] * n for _ in range(lanes)] for _ in range(batch)]
    behind = [[[None] * n for _ in range(lanes)] for _ in range(batch)]
    for b in range(batch):
        key = {}
        for i in range(n):
            position = float(x[b, i])
            key[i] = (position % ring_length if ring_length else position, i)
        for lane in range(lanes):
            for i in range(n):
                members = [j for j in range(n) if occupancy[b, j, lane] and j != i]
                later = [j for j in members if key[j] > key[i]]
                earlier = [j for j in members if key[j] < key[i]]
                if ring_length is not None:
                    later, earlier = later or members, earlier or members
                ahead[b][lane][i] = min(later, key=key.__getitem__, default=None)
                behind[b][lane][i] = max(earlier, key=key.__getitem__, default=None)
    return ahead, behind


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 7),
    lanes=st.integers(1, 3),
    ring=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_lane_neighbors_match_reference(n, lanes, ring, seed):
    generator = torch.Generator().manual_seed(seed)
    # Few distinct positions, so that ties in x (ordered by index) occur.
    x = torch.randint(0, 6, (2, n), generator=generator).double() * 7.0
    occupancy = torch.rand(2, n, lanes, generator=generator) < 0.5
    ring_length = 42.0 if ring else None
    found = lane_neighbors(x, occupancy, ring_length)
    ahead, behind = reference_lane_neighbors(x, occupancy, ring_length)
    for b in range(2):
        for lane in range(lanes):
            for i in range(n):
                for got, has, want in (
                    (found.ahead, found.has_ahead, ahead[b][lane][i]),
                    (found.behind, found.has_behind, behind[b][lane][i]),
                ):
                    assert bool(has[b, lane, i]) == (want is not None)
                    assert int(got[b, lane, i]) == (i if want is None else want)


def _overtaking(lane_change: MOBIL | None, lanes: int = 2, follower_lane: int = 0):
    """A slow car (10 m/s) with a faster driver 60 m behind it in the same lane."""
    road = Road.straight(lanes, speed_limit=30.0)
    return (
        ScenarioBuilder(road, dt=DT)
        .vehicle(follower_lane, 100.0, 10.0, driver=Driver(v0=10.0))
        .vehicle(follower_lane, 40.0, 25.0, driver=Driver(lane_change=lane_change))
        .build()
    )


def _lanes_over_time(states, vehicle: int, road: Road):
    return [int(road.nearest_lane(s.y[0, vehicle])) for s in states]


def test_a_faster_driver_overtakes_a_slow_car_only_with_lane_changes():
    enabled = _overtaking(MOBIL())
    states, collided = enabled.simulate(400, dtype=torch.float64, seed=0)
    lanes = _lanes_over_time(states, 1, enabled.road)
    assert not bool(collided.any())
    assert 1 in lanes  # it moved to the free lane
    assert float(states[-1].x[0, 1]) > float(states[-1].x[0, 0])  # and passed the slow car
    assert float(states[-1].v[0, 1]) > 25.0

    kept = _overtaking(None)
    assert kept.lane_changes(torch.zeros(1)) is None
    states, _ = kept.simulate(400, dtype=torch.float64, seed=0)
    assert set(_lanes_over_time(states, 1, kept.road)) == {0}
    assert float(states[-1].x[0, 1]) < float(states[-1].x[0, 0])


def test_keep_right_bias_brings_a_lone_driver_back_to_lane_zero():
    def final_lane(keep_right: float) -> int:
        scenario = (
            ScenarioBuilder(Road.straight(2), dt=DT)
            .vehicle(1, 0.0, 20.0, driver=Driver(lane_change=MOBIL(keep_right=keep_right)))
            .build()
        )
        states, _ = scenario.simulate(100, dtype=torch.float64, seed=0)
        return _lanes_over_time(states, 0, scenario.road)[-1]

    assert final_lane(0.3) == 0
    assert final_lane(0.0) == 1  # no gain, no bias: it stays
    assert final_lane(-0.3) == 1  # a keep-left bias: lane 1 is already the left lane


def test_a_change_takes_its_duration_and_ends_on_the_lane_centre():
    duration = 3.0
    scenario = (
        ScenarioBuilder(Road.straight(2, speed_limit=20.0), dt=DT)
        .vehicle(1, 0.0, 20.0, driver=Driver(lane_change=MOBIL(keep_right=0.3, duration=duration)))
        .build()
    )
    states, _ = scenario.simulate(60, dtype=torch.float64, seed=0)
    changing = [bool(s.heading[0, 0] != 0) for s in states]
    assert sum(changing) == pytest.approx(duration / DT, abs=1)
    final = states[-1]
    assert float(final.y[0, 0]) == scenario.road.lane_center(0)
    assert float(final.heading[0, 0]) == 0.0
    ys = [float(s.y[0, 0]) for s in states]
    assert all(later <= earlier for earlier, later in zip(ys, ys[1:], strict=False))


def _random_traffic(seed: int, lanes: int, per_lane: int, politeness: float, ring: bool):
    """Humans of mixed desired speeds, spread over the lanes, all with lane changes."""
    road = Road.ring(400.0, lanes) if ring else Road.straight(lanes, speed_limit=30.0)
    builder = ScenarioBuilder(road, dt=DT)
    for lane in range(lanes):
        driver = Driver(v0=(12.0, 30.0), T=(0.8, 1.6), lane_change=MOBIL(politeness=politeness))
        builder.platoon(lane, per_lane, start=lane * 9.0, spacing=400.0 / per_lane, jitter=3.0,
                        speed=(5.0, 15.0), driver=driver)  # fmt: skip
    return builder.build()


def test_every_change_is_safe_for_the_new_follower_and_nothing_collides():
    changes_per_example: list[int] = []

    @settings(max_examples=7, deadline=None)
    @given(
        seed=st.integers(0, 1000),
        lanes=st.integers(2, 3),
        per_lane=st.integers(3, 8),
        politeness=st.sampled_from([0.0, 0.3, 1.0]),
        ring=st.booleans(),
    )
    def check(seed, lanes, per_lane, politeness, ring):
        scenario = _random_traffic(seed, lanes, per_lane, politeness, ring)
        generator = torch.Generator().manual_seed(seed)
        state, drivers = scenario.sample(2, dtype=torch.float64, generator=generator)
        params = scenario.lane_changes(state.x)
        assert params is not None
        road, changes = scenario.road, 0
        for _ in range(200):
            occupancy = lane_occupancy(state, road)
            direction = mobil_directions(state, road, drivers, DT, params, occupancy)
            if bool(direction.any()):
                changes += int((direction != 0).sum())
                _assert_new_followers_brake_at_most_b_safe(state, road, drivers, direction, params)
            result = step(state, road, drivers, DT, lane_changes=params)
            assert not bool(result.collided.any())
            state = result.state
        changes_per_example.append(changes)

    check()
    # the property was exercised (a sparse draw may see no change at all)
    assert sum(changes_per_example) > 0


def _assert_new_followers_brake_at_most_b_safe(state, road, drivers, direction, params):
    """For every change started, the nearest vehicle behind the mover in the target lane (the
    lane's members at the start of the step and the vehicles already moving into it), found one
    pair at a time, brakes no harder than ``b_safe`` behind the mover."""
    occupancy = lane_occupancy(state, road).clone()
    for b, j in torch.nonzero(state.heading).tolist():  # already changing: also in the target lane
        position = float(state.y[b, j]) / road.lane_width - 0.5
        up = float(state.heading[b, j]) > 0
        occupancy[b, j, math.floor(position) + 1 if up else math.ceil(position) - 1] = True
    _, behind = reference_lane_neighbors(state.x, occupancy, road.ring_length)
    for b, i in torch.nonzero(direction).tolist():
        target = int(road.nearest_lane(state.y[b, i])) + int(direction[b, i])
        follower = behind[b][target][i]
        if follower is None:
            continue
        distance = float(state.x[b, i] - state.x[b, follower])
        if road.ring_length is not None:
            distance %= road.ring_length
        # The follower may be changing lane itself: its front sticks out by its heading.
        heading = float(state.heading[b, follower])
        width = float(state.width[b, follower])
        overhang = 0.5 * float(state.length[b, follower]) * (math.cos(heading) - 1)
        overhang += 0.5 * width * abs(math.sin(heading))
        gap = torch.tensor(distance - float(state.length[b, i]) - overhang, dtype=torch.float64)
        assert float(gap) > 0
        own = IDMParams(**{k: v[b, follower] for k, v in drivers.tensors().items()})
        acc = idm_acceleration(state.v[b, follower], state.v[b, i], gap, own)
        assert float(acc) >= -float(params.b_safe[0, i]) - 1e-9


def test_lane_changes_off_leave_the_step_unchanged():
    scenario = _random_traffic(0, 3, 5, 0.5, False)
    state, drivers = scenario.sample(3, dtype=torch.float64, seed=1)
    road = scenario.road
    params = scenario.lane_changes(state.x)
    disabled = MOBIL(**{**params.tensors(), "enabled": torch.zeros_like(params.enabled)})
    for path in ("eager", "fused"):
        plain = rollout(state, road, drivers, DT, 50, path=path)[0][-1]
        off = rollout(state, road, drivers, DT, 50, path=path, lane_changes=disabled)[0][-1]
        on = rollout(state, road, drivers, DT, 50, path=path, lane_changes=params)[0][-1]
        for name in ("x", "y", "v", "heading"):
            assert torch.equal(getattr(off, name), getattr(plain, name))
        assert not torch.equal(on.y, plain.y)  # the scenario does change lanes


def test_what_the_gradient_carries_through_a_lane_change():
    scenario = _overtaking(MOBIL(keep_right=0.0))
    state, drivers = scenario.sample(1, dtype=torch.float64, seed=0)
    v0 = state.v.clone().requires_grad_(True)
    politeness = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    params = MOBIL(politeness=politeness, enabled=torch.tensor([[False, True]]))
    states, _ = rollout(state.replace(v=v0), scenario.road, drivers, DT, 400, lane_changes=params)
    heading = torch.stack([s.heading[0, 1] for s in states])
    started = int(torch.nonzero(heading != 0)[0])
    ended = int(torch.nonzero(heading != 0)[-1]) + 1
    mid = (started + ended) // 2
    during = torch.autograd.grad(states[mid].y[0, 1], v0, retain_graph=True)[0]
    assert float(during[0, 1]) != 0.0  # lateral motion v sin(theta) dt depends on the speed
    (after,) = torch.autograd.grad(
        states[ended + 5].y[0, 1], v0, retain_graph=True, allow_unused=True
    )
    assert after is None or float(after[0, 1]) == 0.0  # put on the lane centre: a constant
    x_grad = torch.autograd.grad(states[-1].x[0, 1], v0, retain_graph=True)[0]
    assert torch.isfinite(x_grad).all() and float(x_grad[0, 1]) != 0.0
    (politeness_grad,) = torch.autograd.grad(states[-1].x[0, 1], politeness, allow_unused=True)
    assert politeness_grad is None  # the decision carries no gradient


def test_bad_lane_change_settings_fail_clearly():
    with pytest.raises(ValueError, match=r"MOBIL.politeness must be in \[0.0, inf\).*-1"):
        MOBIL(politeness=-1.0)
    with pytest.raises(ValueError, match=r"MOBIL.duration must be in \(0.0, inf\) s"):
        MOBIL(duration=0.0)
    with pytest.raises(ValueError, match="MOBIL.enabled must be a bool"):
        MOBIL(enabled=torch.ones(3))
    with pytest.raises(ValueError, match="Driver.lane_change must be a difftraffic.MOBIL"):
        Driver(lane_change=0.5)  # type: ignore[arg-type]
    scenario = (
        ScenarioBuilder(Road.straight(2), dt=DT)
        .vehicle(0, 0.0, 10.0, driver=KraussDriver(sigma=0.5, lane_change=MOBIL()))
        .build()
    )
    state, drivers = scenario.sample(1, seed=0)
    params = scenario.lane_changes(state.x)
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="lane changes need deterministic"):
        validate_step_inputs(state, scenario.road, drivers, DT, lane_changes=params,
                             generator=generator)  # fmt: skip
    with pytest.raises(ValueError, match="lane changes need deterministic"):
        step(state, scenario.road, drivers, DT, generator=generator, lane_changes=params)
    wrong = MOBIL(politeness=torch.zeros(2, 5, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"MOBIL.politeness has shape \(2, 5\)"):
        validate_step_inputs(state, scenario.road, drivers, DT, lane_changes=wrong)


def test_autonomous_vehicles_never_change_lane_by_mobil():
    scenario = (
        ScenarioBuilder(Road.straight(2, speed_limit=30.0), dt=DT)
        .vehicle(0, 100.0, 10.0, driver=Driver(v0=10.0))
        .vehicle(0, 40.0, 25.0, autonomous=True, driver=Driver(lane_change=MOBIL()))
        .build()
    )
    state, _ = scenario.sample(1, seed=0, dtype=torch.float64)
    assert scenario.lane_changes(state.x) is None
    assert isinstance(state, TrafficState) and math.isclose(float(state.y[0, 1]), 2.0)


# --- lane ends -----------------------------------------------------------------------------------


def test_bad_lane_ends_fail_clearly():
    with pytest.raises(ValueError, match=r"Road.lane_ends must be a tuple of 2 positions"):
        Road.straight(2, lane_ends=(math.inf,))
    with pytest.raises(ValueError, match=r"Road.lane_ends\[1\] must be a position > 0 m"):
        Road.straight(2, lane_ends=(math.inf, -5.0))
    with pytest.raises(ValueError, match="at least one lane going on"):
        Road.straight(2, lane_ends=(100.0, 200.0))
    with pytest.raises(ValueError, match="needs a straight road"):
        Road(2, ring_length=300.0, lane_ends=(math.inf, 100.0))
    road = Road.straight(2, lane_ends=(math.inf, 100.0))
    with pytest.raises(ValueError, match=r"beyond the end of its lane 1 \(Road.lane_ends\[1\]"):
        ScenarioBuilder(road).vehicle(1, 120.0).build().sample(1, seed=0)


def _merging(lane_change: MOBIL | None) -> ScenarioBuilder:
    """Cars in both lanes of a road whose lane 1 ends at 400 m."""
    road = Road.straight(2, speed_limit=30.0, lane_ends=(math.inf, 400.0))
    driver = Driver(v0=25.0, lane_change=lane_change)
    builder = ScenarioBuilder(road, dt=DT)
    builder.platoon(0, 6, start=0.0, spacing=35.0, speed=20.0, driver=driver)
    return builder.platoon(1, 6, start=15.0, spacing=35.0, speed=20.0, driver=driver)


def test_without_lane_changes_cars_stop_before_their_lane_ends():
    scenario = _merging(None).build()
    states, collided = scenario.simulate(900, dtype=torch.float64, seed=0)
    final = states[-1]
    in_ending_lane = scenario.road.nearest_lane(final.y[0]) == 1
    assert int(in_ending_lane.sum()) == 6
    front = final.x[0][in_ending_lane]
    assert float(front.max()) <= 400.0 and float(front.max()) > 390.0  # stopped at the end
    assert float(final.v[0][in_ending_lane].max()) < 0.1
    assert not bool(collided.any())


def test_with_mobil_every_car_merges_before_the_end_safely():
    scenario = _merging(MOBIL()).build()
    states, collided = scenario.simulate(900, dtype=torch.float64, seed=0)
    road = scenario.road
    for state in states:  # nobody in the ending lane beyond its end unless merging out of it
        ending = (road.nearest_lane(state.y[0]) == 1) & (state.heading[0] == 0)
        assert bool((state.x[0][ending] <= 400.0).all())
    final = states[-1]
    assert bool((road.nearest_lane(final.y[0]) == 0).all())  # all merged
    assert float(final.x[0].min()) > 400.0  # and passed the drop
    assert not bool(collided.any())


def test_nobody_moves_into_a_lane_that_ends_just_ahead():
    road = Road.straight(2, speed_limit=30.0, lane_ends=(math.inf, 410.0))
    overtaker = Driver(v0=30.0, lane_change=MOBIL(politeness=0.0, threshold=0.0))
    scenario = (
        ScenarioBuilder(road, dt=DT)
        .vehicle(0, 420.0, 5.0, driver=Driver(v0=5.0))
        .vehicle(0, 395.0, 20.0, driver=overtaker)  # a slow car ahead, lane 1 ends in 15 m
        .build()
    )
    state, drivers = scenario.sample(1, dtype=torch.float64, seed=0)
    params = scenario.lane_changes(state.x)
    direction = mobil_directions(state, road, drivers, DT, params, lane_occupancy(state, road))
    assert int(direction[0, 1]) == 0
    open_road = Road.straight(2, speed_limit=30.0)  # the same without the end: it would go
    direction = mobil_directions(
        state, open_road, drivers, DT, params, lane_occupancy(state, open_road)
    )
    assert int(direction[0, 1]) == 1


def test_the_lane_end_gap_is_differentiable_in_position():
    road = Road.straight(2, lane_ends=(math.inf, 100.0))
    base = ScenarioBuilder(road).vehicle(1, 60.0, 10.0).vehicle(0, 90.0, 10.0).build()
    state, _ = base.sample(1, dtype=torch.float64, seed=0)
    no_leader = torch.zeros_like(state.active)

    def gap_to_end(x: torch.Tensor) -> torch.Tensor:
        far = torch.full_like(x, 1e3)
        return lane_end_ahead(state.replace(x=x), road, far, far, no_leader)[0]

    x = state.x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(gap_to_end, (x,))
    gap = gap_to_end(state.x)
    assert float(gap[0, 0]) == 40.0  # lane 1 ends 40 m ahead of the first car
    assert float(gap[0, 1]) == 1e3  # lane 0 goes on: the leader's gap is kept


def test_no_gradient_reaches_the_duration_of_a_change():
    scenario = _overtaking(MOBIL())
    state, drivers = scenario.sample(1, dtype=torch.float64, seed=0)
    duration = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    params = MOBIL(duration=duration, enabled=torch.tensor([[False, True]]))
    for path in ("eager", "fused"):
        states, _ = rollout(state, scenario.road, drivers, DT, 100, path=path, lane_changes=params)
        assert any(float(s.heading[0, 1]) != 0.0 for s in states)  # a change started
        assert not states[-1].y.requires_grad  # its angle is a constant, as documented
