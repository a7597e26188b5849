"""difftraffic.testing: the strategies draw valid worlds, the checker finds wrong gradients and
names discontinuities (the guide's examples run in tests/test_docs.py)."""

import pytest
import torch
from hypothesis import given, settings

from difftraffic import Road, ScenarioBuilder, step
from difftraffic.testing import check_gradient, drivers, events, scenarios


@settings(max_examples=25, deadline=None)
@given(scenarios(), drivers())
def test_drawn_scenarios_and_drivers_are_valid(scenario, params):
    state, idm = scenario.sample(batch_size=2, seed=0)  # validates placement and values
    assert state.x.shape[1] == scenario.num_vehicles
    assert params.v0 > 0 and params.delta >= 1 and params.s0 >= 0


class _WrongBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        return 3 * grad


def test_a_wrong_backward_is_reported_entry_by_entry():
    report = check_gradient(
        lambda x: _WrongBackward.apply(x).sum(), torch.ones(4, dtype=torch.float64)
    )
    assert not report.ok and report.mismatch.all()
    torch.testing.assert_close(report.finite_difference, torch.full((4,), 2.0, dtype=torch.float64))
    assert "4 mismatched" in str(report) and "autograd 3.000000e+00" in str(report)


def test_a_perturbation_that_switches_a_leader_is_discontinuous_not_a_mismatch():
    # Under the "center" rule the car at y = 4 m sits on the lane boundary: +-eps moves it into
    # lane 1 or lane 0, where it becomes the leader of the car behind it.
    road = Road.straight(num_lanes=2, lane_membership="center")
    scenario = ScenarioBuilder(road).vehicle(0, 0.0, 10.0).vehicle(1, 30.0, 10.0).build()
    start, drivers_ = scenario.sample(batch_size=1, seed=0, dtype=torch.float64)

    def follower_speed(y):
        state = start.replace(y=torch.stack([start.y[:, 0], y]).T)
        result = step(state, road, drivers_, 0.1)
        result = step(result.state, road, drivers_, 0.1, neighbors=result.neighbors)
        return result.state.v[0, 0], events(result)

    report = check_gradient(follower_speed, torch.tensor([4.0], dtype=torch.float64))
    assert report.discontinuous.all() and report.ok
    assert "1 discontinuous" in str(report)


def test_inputs_must_be_float64():
    with pytest.raises(ValueError, match="inputs must be a float64 tensor"):
        check_gradient(lambda x: x.sum(), torch.ones(2))


@pytest.mark.parametrize(
    ("ring", "x", "moved", "expected"),
    [
        (None, [0.0, 10.0], [15.0, 1.0], [(0, 1)]),  # 0 ends ahead of 1
        (None, [0.0, 10.0], [11.0, 1.0], []),  # level at the end is not past
        (None, [5.0, 5.0], [2.0, 1.0], [(0, 1)]),  # level: the higher index counts as ahead
        (None, [5.0, 5.0], [1.0, 2.0], []),
        (100.0, [98.0, 1.0], [5.0, 0.0], [(0, 1)]),  # through the ring's start
        (100.0, [1.0, 98.0], [0.0, 104.0], [(1, 0)]),  # a lap to pass a car 3 m ahead
    ],
)
def test_fronts_passed_follows_the_start_order_and_the_ring(make_state, ring, x, moved, expected):
    from difftraffic.testing import fronts_passed

    road = Road(1, 4.0, 30.0, ring)
    before = make_state(x, [2.0, 2.0])
    after = make_state(x, [2.0, 2.0], v=[m / 0.1 for m in moved])
    passed = fronts_passed(before, after, road, 0.1)[0]
    assert [tuple(p) for p in passed.nonzero().tolist()] == expected
