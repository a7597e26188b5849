"""The scenario builder: layout, randomisation, reproducibility and input errors."""

import pytest
import torch

from difftraffic import (
    Driver,
    IDMParams,
    KraussDriver,
    KraussParams,
    MixedDrivers,
    Road,
    ScenarioBuilder,
    step,
    validate_step_inputs,
)


def two_lane_scenario():
    return (
        ScenarioBuilder(Road.straight(num_lanes=2, speed_limit=25.0), dt=0.1)
        .platoon(lane=0, count=4, start=0.0, spacing=30.0, speed=(10.0, 20.0))
        .platoon(lane=1, count=3, start=5.0, spacing=40.0, driver=Driver(T=(1.0, 1.8), a=1.5))
        .vehicle(lane=1, x=200.0, speed=12.0, autonomous=True)
        .build()
    )


def test_layout_follows_the_builder_calls():
    state, idm = two_lane_scenario().sample(batch_size=3, seed=0)
    assert state.x.shape == (3, 8)
    torch.testing.assert_close(state.x[0, :4], torch.tensor([0.0, 30.0, 60.0, 90.0]))
    torch.testing.assert_close(state.x[0, 4:7], torch.tensor([5.0, 45.0, 85.0]))
    torch.testing.assert_close(state.y[0], torch.tensor([2.0] * 4 + [6.0] * 4))
    assert state.is_av[:, 7].all() and not state.is_av[:, :7].any()
    assert state.active.all()
    assert (state.v[:, 7] == 12.0).all()
    assert (state.length == 5.0).all() and (state.width == 2.0).all()
    # v0 defaults to the speed limit; the second platoon's driver sets a = 1.5.
    assert (idm.v0 == 25.0).all()
    assert (idm.a[:, 4:7] == 1.5).all() and (idm.a[:, :4] == 2.6).all()


def test_ranges_are_drawn_per_world_and_vehicle_within_bounds():
    state, idm = two_lane_scenario().sample(batch_size=64, seed=1)
    speeds = state.v[:, :4]
    assert (speeds >= 10.0).all() and (speeds <= 20.0).all()
    assert speeds.std() > 1.0
    headways = idm.T[:, 4:7]
    assert (headways >= 1.0).all() and (headways <= 1.8).all()
    assert headways.std() > 0.1


def test_same_seed_same_worlds_and_different_seed_different_worlds():
    scenario = two_lane_scenario()
    a, idm_a = scenario.sample(batch_size=8, seed=7)
    b, idm_b = scenario.sample(batch_size=8, seed=7)
    c, _ = scenario.sample(batch_size=8, seed=8)
    assert torch.equal(a.v, b.v) and torch.equal(idm_a.T, idm_b.T)
    assert not torch.equal(a.v, c.v)


def test_dtype_and_device_follow_the_request():
    state, idm = two_lane_scenario().sample(batch_size=2, seed=0, dtype=torch.float64)
    assert state.x.dtype == torch.float64 and idm.T.dtype == torch.float64


def test_ring_positions_wrap_into_the_circumference():
    scenario = (
        ScenarioBuilder(Road.ring(100.0)).vehicle(lane=0, x=130.0).vehicle(lane=0, x=60.0).build()
    )
    state = scenario.initial_state()
    torch.testing.assert_close(state.x[0], torch.tensor([30.0, 60.0]))


def test_simulate_runs_idm_traffic_forward():
    states, collided = two_lane_scenario().simulate(steps=20, batch_size=2, seed=0)
    assert len(states) == 21 and collided.shape == (20, 2, 8)
    assert not collided.any()
    moved = states[-1].x - states[0].x
    assert (moved[:, :7] > 0).all()


def test_overlapping_start_is_rejected_with_the_vehicle_named():
    builder = ScenarioBuilder(Road.straight()).vehicle(0, 10.0).vehicle(0, 12.0)
    with pytest.raises(ValueError, match="overlaps another vehicle"):
        builder.build().sample(seed=0)


def test_overlap_across_a_lane_boundary_is_rejected_under_either_lane_membership():
    # A car straddling the 0/1 boundary (centre in lane 1) overlaps a lane-0 car by 0.1 m across.
    for membership in ("body", "center"):
        builder = (
            ScenarioBuilder(Road.straight(num_lanes=2, lane_membership=membership))
            .vehicle(1, 10.0, lateral_offset=-1.5)
            .vehicle(0, 12.0, lateral_offset=0.6)
        )
        with pytest.raises(ValueError, match="overlaps another vehicle"):
            builder.build().sample(seed=0)


def test_vehicle_off_the_road_is_rejected():
    builder = ScenarioBuilder(Road.straight(num_lanes=1)).vehicle(0, 0.0, lateral_offset=1.5)
    with pytest.raises(ValueError, match=r"off the road.*valid range \[0, 4.0\]"):
        builder.build().sample(seed=0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda b: b.vehicle(lane=3, x=0.0), r"lane must be an integer in \[0, 1\], got 3"),
        (lambda b: b.vehicle(lane=0, x=0.0, speed=-1.0), r"speed must be finite and >= 0.0"),
        (lambda b: b.vehicle(lane=0, x=float("nan")), r"x must be finite"),
        (lambda b: b.vehicle(lane=0, x=(5.0, 1.0)), r"low <= high, got \(5.0, 1.0\)"),
        (lambda b: b.platoon(lane=0, count=0), r"count must be an integer >= 1, got 0"),
        (lambda b: b.platoon(lane=0, count=2, spacing=0.0), r"spacing must be in \(0.0, inf\)"),
        (lambda b: b.vehicle(lane=0, x=0.0, length=-5.0), r"length must be in \(0.0, inf\)"),
        (lambda b: b.vehicle(lane=0, x="a"), r"x must be a real number, got 'a' \(str\)"),
        (lambda b: b.vehicle(lane=0, x=0.0, speed=None), r"speed must be a real number, got None"),
    ],
)
def test_bad_builder_input_names_parameter_and_value(call, message):
    builder = ScenarioBuilder(Road.straight(num_lanes=2))
    with pytest.raises(ValueError, match=message):
        call(builder)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"T": 0.0}, r"Driver.T must be finite and > 0.0"),
        ({"a": -1.0}, r"Driver.a must be finite and > 0.0"),
        ({"b": (0.0, 2.0)}, r"Driver.b must be finite and > 0.0"),
        ({"v0": float("inf")}, r"Driver.v0 must be finite"),
        ({"delta": 0.5}, r"Driver.delta must be finite and >= 1.0"),
        ({"s0": -0.1}, r"Driver.s0 must be finite and >= 0.0"),
        ({"v0": "fast"}, r"Driver.v0 must be a real number, got 'fast' \(str\)"),
        ({"T": True}, r"Driver.T must be a real number, got True \(bool\)"),
        ({"b": None}, r"Driver.b must be a real number, got None"),
    ],
)
def test_bad_driver_parameters_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Driver(**kwargs)


def test_empty_scenario_and_bad_batch_size_are_rejected():
    with pytest.raises(ValueError, match="at least one vehicle"):
        ScenarioBuilder(Road.straight()).build()
    scenario = ScenarioBuilder(Road.straight()).vehicle(0, 0.0).build()
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        scenario.sample(batch_size=0)
    with pytest.raises(ValueError, match=r"dt must be in \(0.0, inf\) s, got -0.1"):
        ScenarioBuilder(Road.straight(), dt=-0.1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": torch.int64}, r"dtype must be torch.float32 or torch.float64, got torch.int64"),
        ({"dtype": torch.float16}, r"got torch.float16 \(too coarse: positions drift\)"),
        ({"device": "banana"}, r"device='banana' is not a torch device"),
        ({"device": "cuda:99"}, r"device='cuda:99' is not available in this torch build"),
    ],
)
def test_sampling_in_an_unusable_dtype_or_device_names_it(kwargs, message):
    scenario = ScenarioBuilder(Road.straight()).vehicle(0, 0.0).build()
    with pytest.raises(ValueError, match=message):
        scenario.sample(batch_size=2, seed=0, **kwargs)


def test_string_road_and_step_settings_name_the_parameter():
    with pytest.raises(ValueError, match=r"Road.speed_limit must be a real number, got '30'"):
        Road.straight(speed_limit="30")
    with pytest.raises(ValueError, match=r"dt must be a real number, got '0.1' \(str\)"):
        ScenarioBuilder(Road.straight(), dt="0.1")


def mixed_scenario(sigma: float = 0.0):
    """A ring lane of IDM drivers and Krauss drivers in alternating platoons."""
    return (
        ScenarioBuilder(Road.ring(400.0, speed_limit=20.0), dt=0.1)
        .platoon(lane=0, count=4, start=0.0, spacing=25.0, speed=10.0)
        .platoon(
            lane=0,
            count=4,
            start=200.0,
            spacing=25.0,
            speed=10.0,
            driver=KraussDriver(T=(0.9, 1.1), sigma=sigma),
        )
        .build()
    )


def test_a_krauss_scenario_samples_krauss_drivers():
    scenario = (
        ScenarioBuilder(Road.straight(speed_limit=15.0), driver=KraussDriver(a=(1.5, 2.5)))
        .platoon(lane=0, count=3, spacing=30.0)
        .build()
    )
    _, drivers = scenario.sample(batch_size=16, seed=0)
    assert isinstance(drivers, KraussParams)
    assert (drivers.v0 == 15.0).all() and (drivers.sigma == 0.0).all()
    assert (drivers.a >= 1.5).all() and (drivers.a <= 2.5).all() and drivers.a.std() > 0.1


def test_a_mixed_scenario_samples_each_vehicle_its_own_model():
    _, drivers = mixed_scenario().sample(batch_size=3, seed=0)
    assert isinstance(drivers, MixedDrivers)
    idm, krauss = drivers.models
    assert isinstance(idm, IDMParams) and isinstance(krauss, KraussParams)
    assert drivers.choice.tolist() == [[0] * 4 + [1] * 4] * 3
    headways = krauss.T[:, 4:]
    assert (headways >= 0.9).all() and (headways <= 1.1).all()


def test_mixed_worlds_step_each_vehicle_with_its_model():
    """Every vehicle of a mixed world moves exactly as in a world of its own model."""
    state, drivers = mixed_scenario().sample(batch_size=2, seed=1, dtype=torch.float64)
    road = mixed_scenario().road
    mixed = step(state, road, drivers, 0.1).state.v
    idm, krauss = drivers.models
    assert torch.equal(mixed[:, :4], step(state, road, idm, 0.1).state.v[:, :4])
    assert torch.equal(mixed[:, 4:], step(state, road, krauss, 0.1).state.v[:, 4:])
    assert not torch.equal(mixed, step(state, road, idm, 0.1).state.v)


def test_gradients_reach_only_the_chosen_models_parameters():
    state, drivers = mixed_scenario().sample(batch_size=2, seed=1, dtype=torch.float64)
    road = mixed_scenario().road
    idm, krauss = drivers.models
    idm_T = idm.T.clone().requires_grad_()
    krauss_T = krauss.T.clone().requires_grad_()
    mixed = MixedDrivers(
        (
            IDMParams(**{**idm.tensors(), "T": idm_T}),
            KraussParams(**{**krauss.tensors(), "T": krauss_T}),
        ),
        drivers.choice,
    )
    for _ in range(30):
        state = step(state, road, mixed, 0.1).state
    state.x.sum().backward()
    assert (idm_T.grad[:, :4] != 0).any() and (idm_T.grad[:, 4:] == 0).all()
    assert (krauss_T.grad[:, 4:] != 0).any() and (krauss_T.grad[:, :4] == 0).all()


def test_dawdling_scenarios_repeat_with_their_seed_and_need_a_generator():
    scenario = mixed_scenario(sigma=0.5)
    first, _ = scenario.simulate(steps=30, batch_size=2, seed=4)
    again, _ = scenario.simulate(steps=30, batch_size=2, seed=4)
    other, _ = scenario.simulate(steps=30, batch_size=2, seed=5)
    assert torch.equal(first[-1].x, again[-1].x)
    assert not torch.equal(first[-1].x, other[-1].x)
    state, drivers = scenario.sample(batch_size=2, seed=4)
    with pytest.raises(ValueError, match="sigma > 0.*generator"):
        validate_step_inputs(state, scenario.road, drivers, scenario.dt)
    with pytest.raises(ValueError, match="sigma > 0.*Generator"):
        step(state, scenario.road, drivers, scenario.dt)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sigma": 1.5}, r"KraussDriver.sigma must be <= 1.0"),
        ({"b_emergency": 0.0}, r"KraussDriver.b_emergency must be finite and > 0.0"),
        ({"T": (0.5, -1.0)}, r"KraussDriver.T must be finite and > 0.0"),
    ],
)
def test_bad_krauss_driver_parameters_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KraussDriver(**kwargs)


def test_drivers_of_chosen_worlds_come_with_their_models_and_choices():
    builder = ScenarioBuilder(Road.straight(num_lanes=2), dt=0.1)
    builder.platoon(lane=0, count=3, driver=Driver(T=(0.8, 2.0)))
    builder.platoon(lane=1, count=3, driver=KraussDriver(sigma=0.0))
    _, drivers = builder.build().sample(batch_size=5, seed=0)
    assert isinstance(drivers, MixedDrivers)
    index = torch.tensor([4, 0, 4])
    chosen = drivers.index_worlds(index)
    assert torch.equal(chosen.choice, drivers.choice[index])
    for mine, theirs in zip(chosen.models, drivers.models, strict=True):
        for name, value in mine.tensors().items():
            assert torch.equal(
                torch.as_tensor(value), torch.as_tensor(theirs.tensors()[name])[index]
            )
    shared = IDMParams(v0=20.0, T=torch.tensor([1.0, 1.5]))  # per vehicle, no world axis
    assert shared.index_worlds(index).T is shared.T and shared.index_worlds(index).v0 == 20.0
