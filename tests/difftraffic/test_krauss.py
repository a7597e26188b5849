"""SUMO's Krauss model: gradients, invariants over the valid domain, dawdling and errors.

Its agreement with SUMO's own trajectories is in ``test_sumo_validation.py``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from difftraffic.krauss import (
    KraussParams,
    braking_distance,
    krauss_speed,
    safe_following_speed,
    safe_stopping_speed,
)

DT = 0.1
F64 = torch.float64


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def test_braking_distance_sums_the_euler_steps() -> None:
    """From 10 m/s braking by 4.5 * 0.1 per step, the car covers sum(v - k b dt) dt, k >= 1."""
    speeds = [10.0 - k * 0.45 for k in range(1, 23)]
    expected = sum(s * DT for s in speeds if s > 0)
    assert braking_distance(t(10.0), 4.5, DT).item() == pytest.approx(expected, abs=1e-12)


def test_safe_stopping_speed_lets_the_driver_stop_in_the_distance() -> None:
    """Simulated forward: react for T at the safe speed, then brake by b dt per step, and stop
    within the distance; 1 % faster overshoots it."""
    params = KraussParams(v0=30.0, T=1.0, b=4.5)

    def travelled(speed: float) -> float:
        distance, v = speed * 1.0, speed  # the reaction time, at the chosen speed
        while v > 0:
            v -= 4.5 * DT
            distance += max(v, 0.0) * DT
        return distance

    for distance in (5.0, 23.1, 80.0):
        safe = safe_stopping_speed(t(distance), params, DT).item()
        assert travelled(safe) <= distance + 1e-9
        assert travelled(1.01 * safe) > distance - 1e-3


def test_safe_stopping_speed_is_zero_without_room() -> None:
    params = KraussParams(v0=30.0)
    assert safe_stopping_speed(t(-1.0, 0.0005), params, DT).tolist() == [0.0, 0.0]


def test_free_driver_accelerates_by_a_up_to_v0_and_brakes_by_b_above_it() -> None:
    params = KraussParams(v0=20.0, a=2.6, b=4.5)
    no_leader = torch.tensor([False, False, False])
    speed = krauss_speed(t(10.0, 19.9, 25.0), t(0, 0, 0), t(0, 0, 0), params, DT, no_leader)
    assert speed.tolist() == pytest.approx([10.26, 20.0, 24.55])


def test_emergency_braking_exceeds_b_only_when_needed_and_never_b_emergency() -> None:
    """Close behind a stopped car at speed, the driver brakes harder than b (SUMO's emergency
    rule) but no harder than b_emergency; with room it keeps to b."""
    params = KraussParams(v0=30.0, b=4.5, b_emergency=9.0)
    speed = krauss_speed(t(15.0, 15.0), t(0.0, 0.0), t(6.0, 60.0), params, DT)
    deceleration = (15.0 - speed) / DT
    assert 4.5 + 0.1 < deceleration[0] <= 9.0 + 1e-9
    assert deceleration[1] <= 4.5 + 1e-9


def random_inputs(generator: torch.Generator, n: int = 6) -> list[torch.Tensor]:
    def uniform(low: float, high: float) -> torch.Tensor:
        return (low + (high - low) * torch.rand(n, generator=generator, dtype=F64)).requires_grad_()

    return [
        uniform(2.0, 18.0),  # v
        uniform(2.0, 18.0),  # v_lead
        uniform(8.0, 60.0),  # gap
        uniform(20.0, 30.0),  # v0
        uniform(0.8, 1.6),  # T
        uniform(1.5, 3.0),  # a
        uniform(3.5, 5.0),  # b
        uniform(1.0, 3.0),  # s0
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck_of_the_next_speed(seed: int) -> None:
    """float64 gradcheck through every input and parameter, at random points off the kinks."""
    inputs = random_inputs(torch.Generator().manual_seed(seed))

    def next_speed(v, v_lead, gap, v0, T, a, b, s0):  # noqa: N803  (the model's names)
        params = KraussParams(v0=v0, T=T, a=a, b=b, s0=s0)
        return krauss_speed(v, v_lead, gap, params, DT)

    assert torch.autograd.gradcheck(next_speed, inputs, eps=1e-7, atol=1e-6)


def test_the_safe_speed_carries_the_gradient_of_gap_and_leader_speed() -> None:
    """Following closely (the safe bound active), the next speed grows with the gap and the
    leader's speed and falls with the headway T and the minimum gap s0."""
    v, v_lead, gap = t(12.0), t(10.0), t(20.0)
    T, s0 = t(1.2).requires_grad_(), t(2.5).requires_grad_()
    gap.requires_grad_()
    v_lead.requires_grad_()
    params = KraussParams(v0=30.0, T=T, s0=s0)
    safe = safe_following_speed(v, v_lead, gap, params, DT)
    assert krauss_speed(v, v_lead, gap, params, DT).item() == pytest.approx(safe.item())
    safe.backward()
    assert gap.grad.item() > 0 and v_lead.grad.item() > 0
    assert T.grad.item() < 0 and s0.grad.item() < 0


@settings(max_examples=200, deadline=None)
@given(
    v=st.floats(0.0, 45.0),
    v_lead=st.floats(0.0, 45.0),
    gap=st.floats(0.01, 300.0),
    v0=st.floats(1.0, 40.0),
    T=st.floats(0.1, 3.0),
    a=st.floats(0.1, 10.0),
    b=st.floats(0.5, 10.0),
    s0=st.floats(0.0, 5.0),
    sigma=st.floats(0.0, 1.0),
    extra=st.floats(0.0, 10.0),
    has_leader=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_next_speed_is_finite_with_finite_gradients_and_within_the_bounds(
    v,
    v_lead,
    gap,
    v0,
    T,
    a,
    b,
    s0,
    sigma,
    extra,
    has_leader,
    dtype,  # noqa: N803
) -> None:
    """Over the valid domain, collisions (gap < s0) included: finite value and gradients,
    ``max(0, v - b_emergency dt) <= v' <= v + a dt`` and ``v' <= max(v0, v - b dt)``."""
    leaves = [torch.tensor([x], dtype=dtype, requires_grad=True) for x in (v, v_lead, gap, v0, T)]
    tv, tv_lead, tgap, tv0, tT = leaves
    params = KraussParams(v0=tv0, T=tT, a=a, b=b, s0=s0, sigma=sigma, b_emergency=b + extra)
    generator = torch.Generator().manual_seed(0)
    leader = torch.tensor([has_leader])
    speed = krauss_speed(tv, tv_lead, tgap, params, DT, leader, generator)
    speed.sum().backward()
    assert torch.isfinite(speed).all()
    for leaf in leaves:
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
    tolerance = 1e-4 if dtype == torch.float32 else 1e-9
    value = speed.item()
    assert value >= max(0.0, v - (b + extra) * DT) - tolerance
    assert value <= v + a * DT + tolerance
    assert value <= max(v0, v - b * DT) + tolerance


def test_dawdling_needs_a_generator_and_repeats_with_its_seed() -> None:
    params = KraussParams(v0=20.0, sigma=0.5)
    v = torch.full((1000,), 15.0, dtype=F64)
    with pytest.raises(ValueError, match="sigma > 0.*torch.Generator"):
        krauss_speed(v, v, v, params, DT, torch.zeros(1000, dtype=torch.bool))
    free = torch.zeros(1000, dtype=torch.bool)

    def draw(seed: int) -> torch.Tensor:
        return krauss_speed(v, v, v, params, DT, free, torch.Generator().manual_seed(seed))

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_dawdling_removes_sigma_a_dt_times_a_uniform_draw() -> None:
    """SUMO's rule: from the planned speed (here v + a dt) a dawdler loses sigma a r dt with r
    uniform in [0, 1): the mean loss is sigma a dt / 2 and never above sigma a dt."""
    params = KraussParams(v0=30.0, a=2.0, sigma=0.5)
    v = torch.full((20000,), 15.0, dtype=F64)
    free = torch.zeros(20000, dtype=torch.bool)
    speed = krauss_speed(v, v, v, params, DT, free, torch.Generator().manual_seed(0))
    loss = 15.0 + 2.0 * DT - speed
    assert loss.min() >= 0 and loss.max() < 0.5 * 2.0 * DT
    assert loss.mean().item() == pytest.approx(0.5 * 2.0 * DT / 2, rel=0.02)


def test_a_slow_dawdler_loses_a_share_of_its_own_speed() -> None:
    """Below ``a`` (m/s against m/s^2, SUMO's rule) the loss is sigma v r dt, so a car starting
    from rest still starts."""
    params = KraussParams(v0=30.0, a=2.6, sigma=1.0)
    v = torch.zeros(5000, dtype=F64)
    free = torch.zeros(5000, dtype=torch.bool)
    speed = krauss_speed(v, v, v, params, DT, free, torch.Generator().manual_seed(0))
    planned = 2.6 * DT
    assert (speed > planned * (1 - DT)).all() and (speed <= planned).all()


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("v0", 0.0, "KraussParams.v0 must be in (0.0, inf) m/s"),
        ("T", -1.0, "KraussParams.T must be in (0.0, inf) s"),
        ("s0", -0.5, "KraussParams.s0 must be in [0.0, inf) m"),
        ("sigma", 1.5, "KraussParams.sigma must be in [0.0, 1.0]"),
        ("b_emergency", float("nan"), "KraussParams.b_emergency must be finite"),
    ],
)
def test_bad_parameters_name_themselves(name: str, value: float, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        KraussParams(**{"v0": 20.0, name: value})
    assert fragment in str(info.value)
