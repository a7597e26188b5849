"""The lane-drop bottleneck: cars enter at the demand while the road has room, leave at its end,
merge without collisions; a demand above capacity builds a queue."""

from __future__ import annotations

import pytest
import torch

from difftraffic import Driver
from difftraffic.scenarios.bottleneck import (
    BottleneckConfig,
    bottleneck_worlds,
    enter,
    insert,
    run_bottleneck,
)


def test_below_capacity_outflow_follows_inflow_and_above_it_a_queue_grows():
    config = BottleneckConfig(length=500.0, drop_at=300.0, slots=50)
    demand = torch.tensor([600.0, 4000.0], dtype=torch.float64)
    result = run_bottleneck(config, demand, 240.0, 120.0, torch.Generator().manual_seed(0))
    assert float(result.collisions.sum()) == 0
    low, high = 0, 1
    assert float(result.inflow[low]) == pytest.approx(600.0, rel=0.1)
    assert float(result.outflow[low]) == pytest.approx(600.0, rel=0.2)
    assert float(result.queue_series[low].max()) == 0
    assert float(result.queue_series[high, -1]) > 10  # cars wait upstream of the drop
    assert float(result.outflow[high]) < 3000.0  # one lane cannot carry the demand
    # Every car that left had entered: the minute records add up to no more than entered.
    assert float(result.outflow_series[high].sum()) / 60 <= config.slots + 4000 * 240 / 3600


def test_cars_enter_in_the_lane_with_most_room_and_only_with_room():
    config = BottleneckConfig(slots=4)
    road = config.road
    state, _, _ = bottleneck_worlds(config, 2, torch.Generator().manual_seed(0))
    due = torch.tensor([True, False])
    worlds = enter(state, road, due, config)
    assert worlds.tolist() == [True, False]
    state = insert(state, road, worlds, config)
    assert state.active.sum(1).tolist() == [1, 0]
    assert float(state.x[0, 0]) == config.vehicle_length
    first_lane = int(road.nearest_lane(state.y[0, 0]))
    state = insert(state, road, enter(state, road, due, config), config)
    second = int(road.nearest_lane(state.y[0, 1]))
    assert second != first_lane  # the empty lane had more room
    # Both lanes now have a car at the entry: no room for a third.
    assert not bool(enter(state, road, due, config)[0])


def test_bad_bottleneck_settings_fail_clearly():
    with pytest.raises(ValueError, match=r"drop_at must be in \(0, 1500.0\) m"):
        BottleneckConfig(drop_at=2000.0)
    with pytest.raises(ValueError, match="lanes must be an integer >= 2"):
        BottleneckConfig(lanes=1)
    with pytest.raises(ValueError, match="driver.lane_change must be set"):
        BottleneckConfig(driver=Driver())
