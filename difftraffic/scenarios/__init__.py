"""Ready-made scenarios."""

from difftraffic.scenarios.pace_car import (
    PACE_CAR_VARIANTS,
    PAPER_DRIVER,
    PaceCarConfig,
    PaceCarTask,
    pace_car_config,
)

__all__ = ["PACE_CAR_VARIANTS", "PAPER_DRIVER", "PaceCarConfig", "PaceCarTask", "pace_car_config"]
