"""Ready-made scenarios."""

from difftraffic.scenarios.pace_car import (
    PACE_CAR_VARIANTS,
    PAPER_DRIVER,
    PaceCarConfig,
    PaceCarTask,
    pace_car_config,
)
from difftraffic.scenarios.ring import (
    SUGIYAMA_DRIVER,
    RingConfig,
    RingTask,
    ring_scenario,
    speed_field,
    uniform_flow_speed,
    wave_speed,
)

__all__ = [
    "PACE_CAR_VARIANTS",
    "PAPER_DRIVER",
    "SUGIYAMA_DRIVER",
    "PaceCarConfig",
    "PaceCarTask",
    "RingConfig",
    "RingTask",
    "pace_car_config",
    "ring_scenario",
    "speed_field",
    "uniform_flow_speed",
    "wave_speed",
]
