"""MOBIL as a smooth choice (difftraffic.soft_lane_change): true gradients through human lane
changes, against finite differences, and the behaviour MOBIL's terms promise."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from difftraffic import MOBIL, IDMParams, KraussParams, Road, SoftLanes, rollout, step
from difftraffic.testing import check_gradient

F64 = torch.float64
ROAD = Road.straight(num_lanes=2, lane_width=4.0, lane_membership="center")


def _overtaking(make_state, politeness, threshold, keep_right, v_second, steps=200):
    """A slow car (5 m/s) ahead in lane 0, two faster ones behind it, one in lane 1: 20 s in
    which the fast cars pull out, pass and come back and the lane-1 car moves over."""
    twelve = torch.tensor(12.0, dtype=F64)
    v = torch.stack([torch.tensor(5.0, dtype=F64), v_second, twelve, twelve]).unsqueeze(0)
    state = make_state([[80.0, 50.0, 30.0, 0.0]], [[2.0, 2.0, 2.0, 6.0]], v)
    idm = IDMParams(v0=torch.tensor([[5.0, 15.0, 14.0, 12.0]], dtype=F64))
    mobil = MOBIL(politeness=politeness, threshold=threshold, keep_right=keep_right)
    states, collided = rollout(
        state, ROAD, idm, 0.1, steps, lane_changes=mobil, soft_lanes=SoftLanes()
    )
    return states, collided


def _lane_changes(states) -> int:
    lanes = torch.stack([ROAD.nearest_lane(s.y.detach()) for s in states])
    return int((lanes[1:] != lanes[:-1]).sum())


def test_gradients_through_several_lane_changes_agree_with_finite_differences(make_state):
    """Politeness, threshold, keep-right bias and one car's initial speed: autograd
    and central differences agree to 6 significant digits over 20 s with five lane changes and
    no collision (the discrete MOBIL gives the first three no gradient at all)."""

    def final_positions(point):
        states, _ = _overtaking(make_state, point[0], point[1], point[2], point[3])
        return states[-1].x.sum() + states[-1].y.sum()

    point = torch.tensor([0.5, 0.1, 0.05, 12.0], dtype=F64)
    states, collided = _overtaking(make_state, *point)
    assert _lane_changes(states) >= 5 and not collided.any()
    check = check_gradient(final_positions, point, eps=1e-6, rtol=1e-6, atol=1e-9)
    assert not check.mismatch.any(), (check.autograd, check.finite_difference)
    assert (check.autograd.abs() > 1e-3).all()


def test_discrete_mobil_carries_no_gradient_to_its_parameters_and_the_smooth_one_does(make_state):
    """A slow car and a faster one behind it, a politeness that makes the slow car's move to
    the free lane marginal: under both rules one of the two ends in lane 1 (the discrete rule,
    judging front to back, moves the slow car; the smooth choice the fast one, whose incentive
    is larger), and only the smooth choice tells the politeness what it did."""
    politeness = torch.tensor(0.05, dtype=F64, requires_grad=True)
    state = make_state([[80.0, 50.0]], [[2.0, 2.0]], [[5.0, 12.0]])
    idm = IDMParams(v0=torch.tensor([[5.0, 15.0]], dtype=F64))
    for soft, flows in ((None, False), (SoftLanes(), True)):
        mobil = MOBIL(politeness=politeness)
        states, _ = rollout(state, ROAD, idm, 0.1, 40, lane_changes=mobil, soft_lanes=soft)
        assert ROAD.nearest_lane(states[-1].y.detach()).sum().item() == 1
        total = states[-1].y.sum()
        grad = None
        if total.requires_grad:  # the discrete MOBIL's y has no autograd history at all
            grad = torch.autograd.grad(total, politeness, allow_unused=True)[0]
        assert (grad is not None and grad.abs().item() > 1.0) == flows


def test_a_driver_behind_a_slow_car_moves_over_unless_the_threshold_is_too_high(make_state):
    state = make_state([[40.0, 20.0]], [[2.0, 2.0]], [[5.0, 12.0]])
    idm = IDMParams(v0=torch.tensor([[5.0, 15.0]], dtype=F64))
    for threshold, lane_centre in ((0.1, 6.0), (5.0, 2.0)):  # the incentive is 3.0 m/s^2
        states, _ = rollout(
            state,
            ROAD,
            idm,
            0.1,
            50,
            lane_changes=MOBIL(politeness=0.0, threshold=threshold),
            soft_lanes=SoftLanes(),
        )
        assert states[-1].y[0, 1].item() == pytest.approx(lane_centre, abs=0.1)
        assert states[-1].y[0, 0].item() == pytest.approx(2.0, abs=0.1)  # the leader stays


@pytest.mark.parametrize("keep_right, lane_centre", [(0.3, 2.0), (0.0, 6.0)])
def test_keep_right_brings_a_lone_driver_back_to_lane_0(make_state, keep_right, lane_centre):
    state = make_state([[0.0]], [[6.0]], [[15.0]])
    mobil = MOBIL(keep_right=keep_right)
    states, _ = rollout(
        state, ROAD, IDMParams(v0=15.0), 0.1, 50, lane_changes=mobil, soft_lanes=SoftLanes()
    )
    assert states[-1].y[0, 0].item() == pytest.approx(lane_centre, abs=0.05)


def test_an_unsafe_gap_is_not_taken(make_state):
    """The car behind the slow one would gain by moving over, but a fast car close behind in
    lane 1 would have to brake harder than b_safe: the driver waits until it has passed."""
    state = make_state([[40.0, 20.0, 12.0]], [[2.0, 2.0, 6.0]], [[5.0, 12.0, 20.0]])
    idm = IDMParams(v0=torch.tensor([[5.0, 15.0, 20.0]], dtype=F64))
    states, collided = rollout(
        state, ROAD, idm, 0.1, 10, lane_changes=MOBIL(), soft_lanes=SoftLanes()
    )
    assert max(s.y[0, 1].item() for s in states) < 2.2 and not collided.any()


def test_a_stopped_driver_does_not_move_sideways(make_state):
    state = make_state([[10.0, 0.0]], [[2.0, 2.0]], [[0.0, 0.0]])
    result = step(
        state, ROAD, IDMParams(v0=15.0), 0.1, lane_changes=MOBIL(), soft_lanes=SoftLanes()
    )
    assert torch.equal(result.state.y, state.y)


def test_lane_ends_and_random_drivers_are_refused(make_state):
    state = make_state([[10.0, 0.0]], [[2.0, 2.0]], [[5.0, 5.0]])
    ending = Road.straight(num_lanes=2, lane_ends=(100.0, math.inf))
    with pytest.raises(ValueError, match="needs a road without lane_ends"):
        step(state, ending, IDMParams(v0=15.0), 0.1, lane_changes=MOBIL(), soft_lanes=SoftLanes())
    krauss, generator = KraussParams(v0=15.0, sigma=0.5), torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="deterministic"):
        step(
            state,
            ROAD,
            krauss,
            0.1,
            generator=generator,
            lane_changes=MOBIL(),
            soft_lanes=SoftLanes(),
        )


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5), lanes=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_values_and_gradients_stay_finite_anywhere(make_state, n: int, lanes: int, seed: int):
    """Cars between lanes, overlapping, stopped, inactive slots: a step's positions and their
    gradients in every input and MOBIL parameter are finite."""
    generator = torch.Generator().manual_seed(seed)
    road = Road(lanes, 4.0, 30.0, None, "center")

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(1, n, generator=generator, dtype=F64)

    x, y, v = uniform(0.0, 60.0), uniform(-0.4, 4.4 * lanes), uniform(0.0, 20.0)
    for tensor in (x, y, v):
        tensor.requires_grad_(True)
    politeness = torch.tensor(0.5, dtype=F64, requires_grad=True)
    active = torch.rand(1, n, generator=generator) > 0.2
    state = make_state(x, y, v, active=active)
    result = step(
        state, road, IDMParams(v0=15.0), 0.1, lane_changes=MOBIL(politeness=politeness),
        soft_lanes=SoftLanes(),
    )  # fmt: skip
    new = result.state
    assert torch.isfinite(new.x).all() and torch.isfinite(new.y).all()
    grads = torch.autograd.grad(new.x.sum() + new.y.sum(), (x, y, v, politeness))
    assert all(torch.isfinite(g).all() for g in grads)
