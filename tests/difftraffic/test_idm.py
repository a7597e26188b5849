"""The IDM: values, gradients, properties over the valid domain, and parameter validation."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from difftraffic.idm import IDMParams, desired_gap, equilibrium_gap, idm_acceleration

F64 = torch.float64
PARAM_NAMES = ("v0", "T", "a", "b", "delta", "s0")

# The valid domain, with some margin for realism but reaching the edges (delta = 1, s0 = 0).
speeds = st.floats(0.0, 40.0)
gaps = st.floats(1e-3, 1e3)
idm_params = st.builds(
    IDMParams,
    v0=st.floats(1.0, 40.0),
    T=st.floats(0.1, 3.0),
    a=st.floats(0.1, 40.0),
    b=st.floats(0.1, 30.0),
    delta=st.floats(1.0, 8.0),
    s0=st.floats(0.0, 5.0),
)


def t64(*values: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=F64, requires_grad=grad)


def params_as_tensors(params: IDMParams, grad: bool = True) -> IDMParams:
    return IDMParams(**{n: t64(float(getattr(params, n)), grad=grad) for n in PARAM_NAMES})


def test_known_value_by_hand() -> None:
    # sqrt(ab) = 2, s* = 2 + 10 * 1 + 10 * 2 / 4 = 17, acc = 2 (1 - 1/16 - (17/20)^2) = 0.43
    params = IDMParams(v0=20.0, T=1.0, a=2.0, b=2.0, delta=4.0, s0=2.0)
    acc = idm_acceleration(t64(10.0), t64(8.0), t64(20.0), params)
    assert acc.item() == pytest.approx(0.43, abs=1e-12)
    assert desired_gap(t64(10.0), t64(8.0), params).item() == pytest.approx(17.0, abs=1e-12)


def test_desired_gap_is_s0_when_approach_term_is_negative() -> None:
    params = IDMParams(v0=20.0, T=0.5, a=1.0, b=1.0, s0=3.0)
    # v T + v (v - v_lead) / 2 = 5 + 10 * (-10) / 2 < 0: the max(0, .) clips it to s0.
    assert desired_gap(t64(10.0), t64(20.0), params).item() == 3.0


def test_defaults_are_sumo_passenger_idm() -> None:
    params = IDMParams(v0=30.0)
    assert (params.a, params.b, params.T, params.s0, params.delta) == (2.6, 4.5, 1.0, 2.5, 4.0)


def test_per_driver_parameters_broadcast_like_scalar_calls() -> None:
    v = torch.tensor([[5.0, 12.0, 20.0], [0.0, 8.0, 15.0]], dtype=F64)
    v_lead = v.flip(1)
    gap = torch.tensor([[10.0, 30.0, 60.0], [4.0, 15.0, 40.0]], dtype=F64)
    a = torch.tensor([[1.0, 2.0, 3.0], [0.5, 1.5, 2.5]], dtype=F64)
    T = torch.tensor([[0.8], [1.6]], dtype=F64)
    batched = idm_acceleration(v, v_lead, gap, IDMParams(v0=25.0, T=T, a=a))
    for i in range(2):
        for j in range(3):
            single = IDMParams(v0=25.0, T=float(T[i, 0]), a=float(a[i, j]))
            expected = idm_acceleration(v[i, j], v_lead[i, j], gap[i, j], single)
            assert batched[i, j].item() == pytest.approx(expected.item(), abs=1e-12)


# --- gradients -------------------------------------------------------------------------------


def test_gradcheck_wrt_inputs_and_every_parameter() -> None:
    """float64 gradcheck w.r.t. v, v_lead, gap and all six parameters, away from the kinks
    (every approach term ``v T + v dv / 2 sqrt(ab)`` is clearly positive, every ``v > 0``)."""
    v = t64(8.0, 14.0, 3.0, grad=True)
    v_lead = t64(6.0, 15.0, 0.5, grad=True)
    gap = t64(25.0, 40.0, 6.0, grad=True)
    raw = [
        t64(20.0, 30.0, 15.0),
        t64(1.2, 0.9, 1.5),
        t64(1.5, 2.6, 0.8),
        t64(2.0, 4.5, 1.2),
        t64(4.0, 2.5, 1.3),
        t64(2.0, 2.5, 1.0),
    ]
    raw = [p.requires_grad_() for p in raw]

    def acc(v, v_lead, gap, v0, T, a, b, delta, s0):
        return idm_acceleration(v, v_lead, gap, IDMParams(v0, T, a, b, delta, s0))

    assert torch.autograd.gradcheck(acc, (v, v_lead, gap, *raw))


def test_gradcheck_with_free_road_vehicles_mixed_in() -> None:
    """Vehicles without a leader get inf/NaN gaps; the gradient stays exact for the others."""
    has_leader = torch.tensor([True, False, True, False])
    gap_values = t64(20.0, math.inf, 9.0, math.nan)
    v = t64(10.0, 5.0, 4.0, 0.0, grad=True)
    v_lead = t64(9.0, math.nan, 2.0, 3.0, grad=True)
    T = t64(1.1, grad=True)
    v0 = t64(22.0, grad=True)

    def acc(v, v_lead, T, v0):
        return idm_acceleration(v, v_lead, gap_values, IDMParams(v0=v0, T=T), has_leader)

    assert torch.autograd.gradcheck(acc, (v, v_lead, T, v0))


def test_gradcheck_desired_and_equilibrium_gap() -> None:
    v = t64(4.0, 11.0, grad=True)
    v_lead = t64(3.0, 10.0, grad=True)
    T, a, b = t64(1.3, grad=True), t64(1.7, grad=True), t64(3.0, grad=True)
    assert torch.autograd.gradcheck(
        lambda v, vl, T, a, b: desired_gap(v, vl, IDMParams(25.0, T, a, b)), (v, v_lead, T, a, b)
    )
    assert torch.autograd.gradcheck(
        lambda v, T, a, b: equilibrium_gap(v, IDMParams(25.0, T, a, b)), (v, T, a, b)
    )


def _all_grads(v, v_lead, gap, params, has_leader):
    v = t64(v, grad=True)
    v_lead = t64(v_lead, grad=True)
    gap = t64(gap, grad=True)
    tensor_params = params_as_tensors(params)
    mask = None if has_leader is None else torch.tensor([has_leader])
    acc = idm_acceleration(v, v_lead, gap, tensor_params, mask)
    inputs = (v, v_lead, gap, *(getattr(tensor_params, n) for n in PARAM_NAMES))
    return acc, torch.autograd.grad(acc.sum(), inputs, allow_unused=True)


@settings(max_examples=300, deadline=None)
@given(v=speeds, v_lead=speeds, gap=gaps, params=idm_params, has_leader=st.booleans())
def test_values_and_gradients_finite_over_valid_domain(v, v_lead, gap, params, has_leader):
    acc, grads = _all_grads(v, v_lead, gap, params, has_leader)
    assert torch.isfinite(acc).all()
    for g in grads:
        assert g is None or torch.isfinite(g).all()


@settings(max_examples=100, deadline=None)
@given(params=idm_params, gap=gaps, v_lead=speeds)
def test_zero_speed_and_tiny_gap_are_finite(params, gap, v_lead):
    for v, g in ((0.0, gap), (0.0, 1e-3), (v_lead, 1e-3)):
        acc, grads = _all_grads(v, v_lead, g, params, True)
        assert torch.isfinite(acc).all()
        assert all(torch.isfinite(gr).all() for gr in grads if gr is not None)


@settings(max_examples=200, deadline=None)
@given(v=speeds, v_lead=speeds, gap=gaps, params=idm_params, has_leader=st.booleans())
def test_acceleration_never_above_a(v, v_lead, gap, params, has_leader):
    acc, _ = _all_grads(v, v_lead, gap, params, has_leader)
    assert acc.item() <= params.a


@settings(max_examples=200, deadline=None)
@given(
    params=idm_params.filter(lambda p: p.s0 >= 0.1),
    speed_fraction=st.floats(0.0, 0.95),
)
def test_zero_acceleration_at_equilibrium_gap(params, speed_fraction):
    v = t64(speed_fraction * params.v0)
    gap = equilibrium_gap(v, params)
    acc = idm_acceleration(v, v, gap, params)
    assert acc.item() == pytest.approx(0.0, abs=1e-9 * params.a)


@settings(max_examples=200, deadline=None)
@given(v=speeds, v_lead=speeds, gap=gaps, factor=st.floats(1.0, 10.0), params=idm_params)
def test_acceleration_increases_with_gap(v, v_lead, gap, factor, params):
    near = idm_acceleration(t64(v), t64(v_lead), t64(gap), params)
    far = idm_acceleration(t64(v), t64(v_lead), t64(gap * factor), params)
    assert far.item() >= near.item()
    if factor > 1.01 and desired_gap(t64(v), t64(v_lead), params).item() > 0.01:
        assert far.item() > near.item()
    _, grads = _all_grads(v, v_lead, gap, params, True)
    assert grads[2].item() >= 0.0


@settings(max_examples=200, deadline=None)
@given(
    v=speeds,
    dv=st.floats(0.0, 10.0),
    v_lead=speeds,
    gap=gaps,
    params=idm_params,
    has_leader=st.booleans(),
)
def test_acceleration_decreases_with_own_speed(v, dv, v_lead, gap, params, has_leader):
    mask = torch.tensor([has_leader])
    slow = idm_acceleration(t64(v), t64(v_lead), t64(gap), params, mask)
    fast = idm_acceleration(t64(v + dv), t64(v_lead), t64(gap), params, mask)
    assert fast.item() <= slow.item() + 1e-12 * max(1.0, abs(slow.item()))
    if dv > 0.01 and (v + dv) / params.v0 > 0.1:  # else the change is below float resolution
        assert fast.item() < slow.item()
    _, grads = _all_grads(v, v_lead, gap, params, has_leader)
    assert grads[0].item() <= 0.0


@pytest.mark.parametrize("bad_gap", [math.inf, math.nan, 0.0, -3.0])
@pytest.mark.parametrize("bad_lead", [math.nan, math.inf, 50.0])
def test_free_road_interaction_exactly_zero_with_finite_gradient(bad_gap, bad_lead) -> None:
    params = params_as_tensors(IDMParams(v0=20.0, T=1.2, a=1.5, b=2.0, delta=4.0, s0=2.0))
    v = t64(0.0, 7.0, 25.0, grad=True)
    v_lead = t64(bad_lead, bad_lead, bad_lead, grad=True)
    gap = t64(bad_gap, bad_gap, bad_gap, grad=True)
    has_leader = torch.tensor([False, False, False])
    acc = idm_acceleration(v, v_lead, gap, params, has_leader)
    free = params.a * (1.0 - (v / params.v0) ** params.delta)
    assert torch.equal(acc, free)
    inputs = (v, v_lead, gap, *(getattr(params, n) for n in PARAM_NAMES))
    grads = torch.autograd.grad(acc.sum(), inputs, allow_unused=True)
    for g in grads:
        assert g is None or torch.isfinite(g).all()
    assert torch.equal(grads[1], torch.zeros(3, dtype=F64))
    assert torch.equal(grads[2], torch.zeros(3, dtype=F64))
    assert grads[PARAM_NAMES.index("T") + 3].item() == 0.0
    assert grads[PARAM_NAMES.index("s0") + 3].item() == 0.0


def test_has_leader_all_true_equals_no_mask() -> None:
    v, v_lead, gap = t64(3.0, 12.0), t64(4.0, 10.0), t64(8.0, 30.0)
    params = IDMParams(v0=20.0)
    masked = idm_acceleration(v, v_lead, gap, params, torch.tensor([True, True]))
    assert torch.equal(masked, idm_acceleration(v, v_lead, gap, params))


def test_params_to_keeps_autograd_and_converts_dtype() -> None:
    T = torch.tensor(1.5, dtype=F64, requires_grad=True)
    moved = IDMParams(v0=20.0, T=T).to(torch.zeros(2, dtype=torch.float32))
    assert all(getattr(moved, n).dtype == torch.float32 for n in PARAM_NAMES)
    desired_gap(torch.tensor([10.0]), torch.tensor([10.0]), moved).sum().backward()
    assert T.grad is not None and T.grad.item() == pytest.approx(10.0)


# --- bad input -------------------------------------------------------------------------------

BAD_PARAMS = [
    ("a", 0.0),
    ("a", -1.0),
    ("b", 0.0),
    ("b", -4.5),
    ("T", 0.0),
    ("T", -0.5),
    ("v0", 0.0),
    ("v0", -3.0),
    ("delta", 0.5),
    ("delta", 0.0),
    ("s0", -0.1),
    ("a", math.nan),
    ("T", math.inf),
    ("v0", -math.inf),
    ("s0", math.nan),
    ("delta", math.inf),
]


@pytest.mark.parametrize(("name", "value"), BAD_PARAMS)
def test_bad_parameter_raises_naming_parameter_and_value(name: str, value: float) -> None:
    kwargs = {"v0": 20.0, name: value}
    with pytest.raises(ValueError, match=re.escape(f"IDMParams.{name}")) as info:
        IDMParams(**kwargs)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(("name", "value"), [("a", 0.0), ("T", -1.0), ("delta", math.nan)])
def test_bad_element_in_parameter_tensor_is_reported(name: str, value: float) -> None:
    good = {"v0": 20.0, "T": 1.0, "a": 1.0, "delta": 4.0}[name]
    tensor = torch.tensor([[good, good], [good, value]], dtype=F64)
    with pytest.raises(ValueError, match=re.escape(f"IDMParams.{name}")) as info:
        IDMParams(**{"v0": 20.0, name: tensor})
    assert repr(value) in str(info.value)
    assert "(1, 1)" in str(info.value)


def test_boundary_parameters_are_accepted() -> None:
    params = IDMParams(v0=20.0, delta=1.0, s0=0.0)
    acc = idm_acceleration(t64(5.0), t64(5.0), t64(10.0), params)
    assert torch.isfinite(acc).all()
