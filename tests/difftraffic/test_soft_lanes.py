"""Smooth lane membership and leader selection (difftraffic.soft_lanes)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from difftraffic import IDMParams, Road, SoftLanes, rollout, step
from difftraffic.neighbors import compute_neighbors, leader_gap_and_speed
from difftraffic.soft_lanes import soft_lane_weights, soft_leader_gap_and_speed
from difftraffic.testing import check_gradient

F64 = torch.float64


def test_lane_weights_pick_the_nearest_centre_and_move_smoothly_across_a_boundary() -> None:
    road = Road.straight(num_lanes=3, lane_width=4.0)
    y = torch.tensor([[2.0, 6.0, 10.0, 3.9, 4.0, 4.1]], dtype=F64)
    weights = soft_lane_weights(y, road, 0.25)
    assert torch.allclose(weights.sum(-1), torch.ones_like(y))
    centred = weights[0, :3]
    assert torch.allclose(centred, torch.eye(3, dtype=F64), atol=1e-50)
    # on the boundary between lanes 0 and 1 the two share the car equally
    assert weights[0, 4, 0].item() == pytest.approx(0.5) == weights[0, 4, 1].item()
    assert 0.5 < weights[0, 3, 0].item() < 1.0 and 0.5 < weights[0, 5, 1].item() < 1.0


def test_with_cars_at_lane_centres_the_soft_leader_is_the_discrete_one(make_state) -> None:
    """Cars at their lanes' centres, at least 5 m apart: the soft gap and leader speed are the
    nearest-centre rule's to a micrometre (the tails of the soft minimum are exp(-20) and
    smaller); a car with no leader reads the virtual leader's gap."""
    road = Road.straight(num_lanes=2, lane_width=4.0, lane_membership="center")
    x = [[70.0, 50.0, 30.0, 62.0, 40.0]]
    y = [[2.0, 2.0, 2.0, 6.0, 6.0]]
    state = make_state(x, y, [[9.0, 10.0, 11.0, 12.0, 13.0]])
    soft = SoftLanes()
    gap, v_lead = soft_leader_gap_and_speed(state, road, soft)
    neighbors = compute_neighbors(state, road)
    exact_gap, exact_speed = leader_gap_and_speed(state, neighbors, road)
    has = neighbors.has_leader
    assert torch.allclose(gap[has], exact_gap[has], atol=1e-6, rtol=0)
    assert torch.allclose(v_lead[has], exact_speed[has], atol=1e-6, rtol=0)
    assert torch.allclose(gap[~has], torch.full_like(gap[~has], soft.free_gap))
    assert torch.allclose(v_lead[~has], state.v[~has])


def test_a_soft_step_of_centred_traffic_matches_the_discrete_step(make_state) -> None:
    """With a virtual leader far enough to be negligible, a whole step agrees with the discrete
    nearest-centre step to 1e-9."""
    road = Road.straight(num_lanes=2, lane_width=4.0, lane_membership="center")
    state = make_state(
        [[70.0, 50.0, 30.0, 62.0, 40.0]],
        [[2.0, 2.0, 2.0, 6.0, 6.0]],
        [[9.0, 10.0, 11.0, 12.0, 13.0]],
        heading=[[0.02, 0.0, 0.0, 0.0, 0.0]],
        is_av=[[True, False, False, False, False]],
    )
    idm = IDMParams(v0=20.0)
    acc = torch.full_like(state.x, 0.5)
    steer = torch.full_like(state.x, 0.01)
    exact = step(state, road, idm, 0.1, acc, steer, path="eager")
    smooth = step(state, road, idm, 0.1, acc, steer, soft_lanes=SoftLanes(free_gap=1e9))
    for name in ("x", "y", "v", "heading"):
        assert torch.allclose(getattr(smooth.state, name), getattr(exact.state, name), atol=1e-9)
    assert torch.equal(smooth.collided, exact.collided)


def test_gradcheck_of_the_soft_gap_and_leader_speed(make_state) -> None:
    """float64 gradcheck in every car's x, y, v and heading, with cars on and between lanes (the
    weights' transition) on a straight road and a ring."""
    for ring_length in (None, 120.0):
        road = Road(2, 4.0, 30.0, ring_length, "center")

        def outputs(x, y, v, heading, road=road):
            state = make_state(x, y, v, heading=heading)
            gap, v_lead = soft_leader_gap_and_speed(state, road, SoftLanes(0.5, 0.5, 200.0))
            return torch.cat([gap, v_lead])

        inputs = [
            torch.tensor([[40.0, 31.0, 22.0, 35.0]], dtype=F64, requires_grad=True),
            torch.tensor([[2.0, 3.6, 4.3, 6.0]], dtype=F64, requires_grad=True),
            torch.tensor([[9.0, 10.0, 11.0, 12.0]], dtype=F64, requires_grad=True),
            torch.tensor([[0.05, -0.02, 0.03, 0.01]], dtype=F64, requires_grad=True),
        ]
        assert torch.autograd.gradcheck(outputs, inputs)
        grad_y = torch.autograd.grad(outputs(*inputs)[0, 2], inputs[1])[0]
        assert grad_y.abs().max() > 1e-3  # not vacuous: lateral positions move the gap


def _cut_in(make_state, soft: SoftLanes | None, horizon: int = 40):
    """The scenario of test_dynamics' test_gradient_across_a_lane_change: an AV in lane 1 at
    heading -0.1 rad drifts into lane 0 in front of a faster human. Returns the human's speed
    after ``horizon`` steps as a function of the AV's initial ``(x, y)``."""
    road, idm = Road.straight(num_lanes=2, lane_membership="center"), IDMParams(v0=20.0)

    def follower_speed(av_xy: torch.Tensor) -> torch.Tensor:
        x = torch.stack([av_xy[0], torch.tensor(35.0, dtype=F64)]).unsqueeze(0)
        y = torch.stack([av_xy[1], torch.tensor(2.0, dtype=F64)]).unsqueeze(0)
        state = make_state(x, y, [10.0, 14.0], heading=[-0.1, 0.0], is_av=[True, False])
        states, collided = rollout(state, road, idm, 0.1, horizon, soft_lanes=soft)
        assert not collided.any()
        return states[-1].v[0, 1]

    return follower_speed


def test_soft_lanes_give_the_lateral_position_a_true_gradient(make_state) -> None:
    """Under the discrete rule the follower's speed has zero gradient w.r.t. the AV's lateral
    position (test_dynamics pins that); with soft lanes the gradient is non-zero, agrees with
    central differences to 6 significant digits through the AV's crossing into the lane, and has
    the sign of the discrete rule's jumps (an AV further from the lane enters later, when the
    follower has closed in: it brakes harder and is slower at the end)."""
    follower_speed = _cut_in(make_state, SoftLanes())
    point = torch.tensor([60.0, 6.0], dtype=F64)
    check = check_gradient(follower_speed, point, eps=1e-5, rtol=1e-6, atol=0.0)
    assert not check.mismatch.any(), check
    grad_x, grad_y = check.autograd.tolist()
    assert grad_x > 1e-3 and grad_y < -1e-3

    # The discrete rule: the speed is a step function of y (the entry step is an integer), so
    # its derivative is zero although half a metre changes the outcome.
    discrete = _cut_in(make_state, None)
    partial = check_gradient(discrete, point, eps=1e-5, rtol=1e-3, atol=1e-9)
    assert partial.autograd[0].item() > 1e-3 and partial.autograd[1].item() == 0.0
    with torch.no_grad():
        moved = discrete(point + torch.tensor([0.0, 0.5], dtype=F64)) - discrete(point)
    assert moved.item() < -1e-2


def test_soft_lanes_are_not_forced_onto_the_fused_step(make_state) -> None:
    state = make_state([[30.0, 10.0]], [[2.0, 2.0]], [[10.0, 10.0]])
    road, idm = Road.straight(num_lanes=2), IDMParams(v0=20.0)
    with pytest.raises(ValueError, match="soft lanes run on the eager step"):
        step(state, road, idm, 0.1, soft_lanes=SoftLanes(), path="fused")


@pytest.mark.parametrize(
    "name", ["lateral_scale", "gap_scale", "free_gap", "choice_scale", "safety_scale"]
)
def test_soft_lane_scales_must_be_positive(name: str) -> None:
    with pytest.raises(ValueError, match=rf"SoftLanes\.{name} must be in \(0\.0, inf\), got -1\.0"):
        SoftLanes(**{name: -1.0})


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 6),
    lanes=st.integers(1, 3),
    ring=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_soft_gaps_and_gradients_stay_finite_and_never_exceed_the_nearest_candidate(
    make_state, n: int, lanes: int, ring: bool, seed: int
) -> None:
    """Anywhere on the road (cars between lanes, overlapping, off the edges, inactive slots):
    values and gradients are finite, and the soft gap never exceeds the free gap or the gap to
    the nearest car ahead whose lane weights are those of the follower's lane."""
    generator = torch.Generator().manual_seed(seed)
    road = Road(lanes, 4.0, 30.0, 300.0 if ring else None, "center")
    x = (torch.rand(1, n, generator=generator, dtype=F64) * 80.0).requires_grad_(True)
    y = (
        (torch.rand(1, n, generator=generator, dtype=F64) * 1.2 - 0.1) * road.width
    ).requires_grad_(True)
    v = (torch.rand(1, n, generator=generator, dtype=F64) * 20.0).requires_grad_(True)
    heading = ((torch.rand(1, n, generator=generator, dtype=F64) - 0.5) * 0.4).requires_grad_(True)
    active = torch.rand(1, n, generator=generator) > 0.2
    state = make_state(x, y, v, heading=heading, active=active)
    soft = SoftLanes()
    gap, v_lead = soft_leader_gap_and_speed(state, road, soft)
    assert torch.isfinite(gap).all() and torch.isfinite(v_lead).all()
    assert (gap <= soft.free_gap + 1e-9).all()
    grads = torch.autograd.grad((gap.sum() + v_lead.sum()), (x, y, v, heading))
    assert all(torch.isfinite(g).all() for g in grads)
    if lanes == 1 and not ring:  # one lane: the soft minimum is below every candidate's gap
        nearest = compute_neighbors(state.detach(), road)
        exact, _ = leader_gap_and_speed(state.detach(), nearest, road)
        has = nearest.has_leader & state.active
        assert (gap.detach()[has] <= exact[has] + 1e-9).all()
