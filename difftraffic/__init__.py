"""difftraffic: a differentiable, batched microscopic traffic simulator in PyTorch.

Every quantity is a ``[B, N]`` tensor (B worlds, N vehicles); human drivers follow a car-following
model (the IDM, SUMO's Krauss, or a mix of both), and
``torch.autograd`` differentiates any rollout quantity with respect to actions, initial states and
driver parameters. Importing this package registers the Gymnasium ids
``difftraffic/PaceCar-<variant>-v0`` and does not import pygame.
"""

from difftraffic.car_following import CarFollowingModel, Drivers, MixedDrivers
from difftraffic.compile import compile_step
from difftraffic.dynamics import StepResult, rollout, step, validate_step_inputs
from difftraffic.env import TrafficEnv, TrafficTask
from difftraffic.idm import IDMParams, desired_gap, equilibrium_gap, idm_acceleration
from difftraffic.krauss import KraussParams, krauss_speed
from difftraffic.lane_change import MOBIL
from difftraffic.neighbors import Neighbors, compute_neighbors, detect_collisions
from difftraffic.registration import register_envs
from difftraffic.road import Road
from difftraffic.scenario import Driver, KraussDriver, Scenario, ScenarioBuilder
from difftraffic.scenarios import PACE_CAR_VARIANTS, PaceCarConfig, PaceCarTask, pace_car_config
from difftraffic.scenarios.pace_car_env import PaceCarEnv, PaceCarGymEnv
from difftraffic.scenarios.ring_env import RingEnv, RingGymEnv
from difftraffic.soft_lanes import SoftLanes
from difftraffic.state import TrafficState

__version__ = "0.1.0"

register_envs()

__all__ = [
    "PACE_CAR_VARIANTS",
    "CarFollowingModel",
    "Driver",
    "Drivers",
    "IDMParams",
    "KraussDriver",
    "KraussParams",
    "MOBIL",
    "MixedDrivers",
    "Neighbors",
    "PaceCarConfig",
    "PaceCarEnv",
    "PaceCarGymEnv",
    "RingEnv",
    "RingGymEnv",
    "PaceCarTask",
    "Road",
    "Scenario",
    "ScenarioBuilder",
    "SoftLanes",
    "StepResult",
    "TrafficEnv",
    "TrafficState",
    "TrafficTask",
    "compile_step",
    "compute_neighbors",
    "desired_gap",
    "detect_collisions",
    "equilibrium_gap",
    "idm_acceleration",
    "krauss_speed",
    "pace_car_config",
    "rollout",
    "step",
    "validate_step_inputs",
]
