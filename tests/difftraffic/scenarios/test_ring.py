"""The Sugiyama ring: waves form from a near-uniform start and travel upstream; the wave-speed
measurement recovers known speeds; the uniform-flow speed is the IDM's equilibrium."""

from __future__ import annotations

import math

import pytest
import torch

from difftraffic import Driver, rollout
from difftraffic.idm import IDMParams, equilibrium_gap, idm_acceleration
from difftraffic.scenarios.ring import (
    RingConfig,
    ring_scenario,
    speed_field,
    uniform_flow_speed,
    wave_speed,
)
from difftraffic.state import TrafficState


@pytest.mark.parametrize("speed", [-5.3, 2.7, -0.4])
def test_wave_speed_recovers_a_travelling_pattern(speed: float) -> None:
    length, cells, dt = 230.0, 230, 0.1
    x = torch.arange(cells, dtype=torch.float64) * length / cells
    t = torch.arange(400, dtype=torch.float64)[:, None] * dt
    phase = 2 * math.pi * (x - speed * t) / length
    field = (5 + 3 * torch.sin(phase) + torch.cos(2 * phase))[None]
    assert float(wave_speed(field, length, dt)[0]) == pytest.approx(speed, abs=1e-6)
    with pytest.raises(ValueError, match="lag=400 is invalid; valid range: 1..399"):
        wave_speed(field, length, dt, lag=400)


def test_speed_field_interpolates_between_cars_around_the_ring() -> None:
    # three cars at 10, 50 and 200 m of a 240 m ring (one of them given past the end)
    x = torch.tensor([[10.0, 290.0, 200.0]], dtype=torch.float64)
    v = torch.tensor([[1.0, 5.0, 3.0]], dtype=torch.float64)
    zeros = torch.zeros_like(x)
    state = TrafficState(
        x=x,
        y=zeros,
        v=v,
        heading=zeros,
        length=zeros + 5.0,
        width=zeros + 2.0,
        is_av=zeros.bool(),
        active=~zeros.bool(),
    )
    field = speed_field([state], 240.0, cells=24)[0, 0]  # every 10 m
    assert float(field[1]) == pytest.approx(1.0)  # at a car
    assert float(field[3]) == pytest.approx(3.0)  # 30 m: halfway from 10 m (1) to 50 m (5)
    assert float(field[22]) == pytest.approx(3.0 + (1.0 - 3.0) * 20 / 50)  # 220 m, wrapping


def test_uniform_flow_speed_balances_the_equilibrium_gaps() -> None:
    generator = torch.Generator().manual_seed(0)
    params = IDMParams(
        v0=14 + 2 * torch.rand(3, 22, generator=generator, dtype=torch.float64),
        T=0.5 + 0.2 * torch.rand(3, 22, generator=generator, dtype=torch.float64),
        a=torch.full((3, 22), 0.8, dtype=torch.float64),
        b=torch.full((3, 22), 1.5, dtype=torch.float64),
        s0=torch.full((3, 22), 1.5, dtype=torch.float64),
    )
    speed = uniform_flow_speed(params, 230.0, 4.0)
    gaps = equilibrium_gap(speed[:, None].expand(3, 22), params)
    assert torch.allclose(gaps.sum(-1), torch.full((3,), 230.0 - 22 * 4.0, dtype=torch.float64))
    # at that speed and those gaps every driver's acceleration is zero
    v = speed[:, None].expand(3, 22)
    assert float(idm_acceleration(v, v, gaps, params).abs().max()) < 1e-9


def test_waves_form_and_travel_upstream() -> None:
    """Issue 16: waves emerge from a near-uniform start within 300 s and move against the
    traffic; the same seed gives the same waves."""
    config = RingConfig()
    scenario = ring_scenario(config)

    def run(seed: int) -> list[TrafficState]:
        generator = torch.Generator().manual_seed(seed)
        state, drivers = scenario.sample(2, dtype=torch.float64, generator=generator)
        return rollout(state, scenario.road, drivers, config.dt, 3000, generator=generator)[0]

    states = run(0)
    speeds = torch.stack([s.v for s in states], 1)
    assert float(speeds[:, 0].std(-1).max()) < 1e-9  # everyone starts at 7 m/s
    assert bool((speeds[:, -1].std(-1) > 2.0).all())  # stop-and-go by 300 s
    assert bool((speeds[:, -600:].min(-1).values < 0.5).any(-1).all())  # cars stop
    field = speed_field(states, config.length)
    waves = wave_speed(field[:, -1000:], config.length, config.dt)
    assert bool(((waves < -1.0) & (waves > -10.0)).all()), waves  # upstream, m/s
    assert all(torch.equal(a.x, b.x) for a, b in zip(states[-5:], run(0)[-5:], strict=True))


def test_bad_ring_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="vehicles=1 is invalid; valid range: integer >= 2"):
        RingConfig(vehicles=1)
    with pytest.raises(ValueError, match=r"jitter=4.0 m is invalid; valid range: 0 <= jitter <"):
        RingConfig(jitter=4.0)
    with pytest.raises(ValueError, match="speed"):
        RingConfig(speed=-1.0)
    with pytest.raises(ValueError, match="length"):
        RingConfig(length=0.0)
    assert ring_scenario(RingConfig(driver=Driver())).road.ring_length == 230.0
