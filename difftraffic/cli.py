"""The ``difftraffic`` command: simulate or render a pace-car variant or a user's scenario.

Examples::

    difftraffic render 10lane --steps 300 --out rollout.mp4
    difftraffic render my_scenarios.py:two_lane_ring --steps 200 --out ring.gif --camera road
    difftraffic simulate 4lane --steps 1000 --batch 64
    difftraffic calibrate trajectories.csv --model idm --out fitted.csv
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from difftraffic.dynamics import AV_KINEMATICS
from difftraffic.policy import load_policy
from difftraffic.road import LANE_MEMBERSHIPS
from difftraffic.scenario import Scenario
from difftraffic.scenarios.pace_car import PACE_CAR_VARIANTS, WeavingPaceCar
from difftraffic.scenarios.pace_car_env import PaceCarEnv
from difftraffic.state import TrafficState

POLICIES = ("weave", "random", "idle")
RANDOM_ACCELERATION = 3.0
"""Bound (m/s^2) of the uniform random acceleration of a user scenario's autonomous vehicles."""
RANDOM_STEERING = math.radians(3.0)
"""Bound (rad) of the uniform random steering of a user scenario's autonomous vehicles."""

Source = Scenario | PaceCarEnv


# -- scenarios -------------------------------------------------------------------------------


def load_scenario(spec: str) -> Scenario:
    """The :class:`Scenario` returned by the function that ``spec`` names.

    Args:
        spec: ``"package.module:function"`` or ``"path/to/file.py:function"``; the function
            takes no arguments.
    """
    module_name, sep, function_name = spec.rpartition(":")
    if not sep or not module_name or not function_name:
        raise ValueError(
            f"scenario must be a pace-car variant ({', '.join(PACE_CAR_VARIANTS)}) or "
            f"'module:function' / 'file.py:function', got {spec!r}"
        )
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ValueError(f"scenario file {module_name!r} (from {spec!r}) does not exist")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"scenario file {module_name!r} (from {spec!r}) is not a module")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"{module_name!r} has no function {function_name!r} (from {spec!r})")
    scenario = function()
    if not isinstance(scenario, Scenario):
        raise ValueError(
            f"{spec} must return a difftraffic.Scenario (ScenarioBuilder(...).build()), "
            f"got {type(scenario).__name__}"
        )
    return scenario


def make_source(
    spec: str,
    batch_size: int,
    seed: int,
    lane_membership: str | None = None,
    av_kinematics: str | None = None,
) -> Source:
    """A pace-car environment (``batch_size`` worlds) for a variant name, else the user's
    scenario. ``lane_membership`` and ``av_kinematics`` (pace-car variants only) override the
    road's rule and the pace car's motion model."""
    chosen = {"lane_membership": lane_membership, "av_kinematics": av_kinematics}
    overrides = {name: value for name, value in chosen.items() if value is not None}
    if spec in PACE_CAR_VARIANTS:
        return PaceCarEnv(spec, batch_size, config_overrides=overrides, seed=seed)
    if overrides:
        flags = ", ".join("--" + name.replace("_", "-") for name in overrides)
        raise ValueError(
            f"{flags} applies to pace-car variants; a user scenario sets its own road and vehicles"
        )
    return load_scenario(spec)


# -- policies --------------------------------------------------------------------------------


def policy_name(name: str | None, source: Source) -> str:
    """``name``, or the default policy of ``source`` when ``None``: weave for a pace car, else
    idle."""
    if name is not None:
        return name
    return "weave" if isinstance(source, PaceCarEnv) else "idle"


def make_policy(name: str | None, source: Source, seed: int) -> Callable[[Any], Any] | None:
    """The policy called ``name`` for ``source`` (``None`` for idle: zero actions); ``name=None``
    picks ``weave`` for a pace-car environment and ``idle`` otherwise.

    ``random`` draws actions uniformly in ``[-1, 1]`` for a pace-car environment and, for a user
    scenario, accelerations in ``±RANDOM_ACCELERATION`` and steering in ``±RANDOM_STEERING``.
    ``weave`` is :class:`WeavingPaceCar` (pace-car variants only). Anything else is taken for
    an exported policy: a ``difftraffic_rl`` run directory or its ``policy.pt2``.
    """
    name = policy_name(name, source)
    if name not in POLICIES:
        if not isinstance(source, PaceCarEnv):
            raise ValueError(f"--policy {name!r}: a policy file drives a pace-car variant")
        return load_policy(name, source.obs_dim)
    if name == "idle":
        return None
    generator = torch.Generator().manual_seed(seed)
    if isinstance(source, PaceCarEnv):
        if name == "weave":
            return WeavingPaceCar(source.task.dt)
        shape = (source.num_envs, source.action_dim)
        return lambda obs: 2.0 * torch.rand(shape, generator=generator) - 1.0
    if name == "weave":
        raise ValueError("--policy weave drives a pace car; use it with a pace-car variant")

    def random_controls(state: TrafficState) -> tuple[Tensor, Tensor]:
        unit = torch.rand((2, *state.x.shape), generator=generator, dtype=state.x.dtype)
        return (2.0 * unit[0] - 1.0) * RANDOM_ACCELERATION, (2.0 * unit[1] - 1.0) * RANDOM_STEERING

    return random_controls


# -- commands --------------------------------------------------------------------------------


def render_command(args: argparse.Namespace) -> None:
    """``difftraffic render``: write a video of one world."""
    from difftraffic.render import RenderConfig, record_rollout

    source = make_source(
        args.scenario, args.batch, args.seed, args.lane_membership, args.av_kinematics
    )
    policy = make_policy(args.policy, source, args.seed)
    config = RenderConfig(
        width=args.width,
        height=args.height,
        camera=args.camera,
        follow=args.follow,
        zoom=args.zoom,
        color_by_speed=args.speed_colors,
    )
    path = record_rollout(
        source,
        args.out,
        args.steps,
        policy,
        seed=args.seed,
        world=args.world,
        batch_size=None if isinstance(source, PaceCarEnv) else args.batch,
        config=config,
        fps=args.fps,
        progress=not args.quiet,
    )
    print(f"wrote {path} ({args.steps + 1} frames)")


@dataclass
class Summary:
    """Running totals of a simulation, over every world and step."""

    vehicle_steps: int = 0
    human_speed_sum: float = 0.0
    human_count: int = 0
    av_speed_sum: float = 0.0
    av_count: int = 0
    collisions: int = 0
    reward_sum: float = 0.0
    reward_count: int = 0

    def add(self, state: TrafficState, collisions: int, reward: Tensor | None) -> None:
        humans, avs = state.is_human, state.active & state.is_av
        self.vehicle_steps += int(state.active.sum())
        self.human_speed_sum += float(state.v[humans].sum())
        self.human_count += int(humans.sum())
        self.av_speed_sum += float(state.v[avs].sum())
        self.av_count += int(avs.sum())
        self.collisions += collisions
        if reward is not None:
            self.reward_sum += float(torch.as_tensor(reward).sum())
            self.reward_count += len(reward)


def simulate_command(args: argparse.Namespace) -> None:
    """``difftraffic simulate``: run a batch and print a summary."""
    source = make_source(
        args.scenario, args.batch, args.seed, args.lane_membership, args.av_kinematics
    )
    policy = make_policy(args.policy, source, args.seed)
    summary = Summary()
    with torch.no_grad():
        start = time.perf_counter()
        if isinstance(source, PaceCarEnv):
            episodes = _simulate_env(source, policy, args.steps, args.seed, summary)
        else:
            _simulate_scenario(source, policy, args.steps, args.batch, args.seed, summary)
            episodes = None
        elapsed = time.perf_counter() - start
    print(
        f"scenario {args.scenario}: {args.batch} worlds x {args.steps} steps, "
        f"policy {policy_name(args.policy, source)}"
    )
    if summary.human_count:
        print(f"  mean human speed     {summary.human_speed_sum / summary.human_count:8.3f} m/s")
    if summary.av_count:
        print(f"  mean AV speed        {summary.av_speed_sum / summary.av_count:8.3f} m/s")
    kind = "pace-car collisions" if episodes is not None else "collisions (vehicle-steps)"
    print(f"  {kind:<20} {summary.collisions:8d}")
    if summary.reward_count:
        print(f"  mean step reward     {summary.reward_sum / summary.reward_count:8.3f}")
    if episodes is not None:
        ended = ", ".join(f"{reason} {count}" for reason, count in episodes.items())
        print(f"  episodes ended       {ended}")
    print(
        f"  throughput           {summary.vehicle_steps / elapsed / 1e6:8.3f} M vehicle-steps/s "
        f"({elapsed:.2f} s)"
    )


def _simulate_env(
    env: PaceCarEnv,
    policy: Callable[[Any], Any] | None,
    steps: int,
    seed: int,
    summary: Summary,
) -> dict[str, int]:
    obs, _ = env.reset(seed=seed)
    idle = torch.zeros(env.num_envs, env.action_dim)
    episodes = {"truncated": 0}
    for _ in range(steps):
        obs, reward, _, truncated, info = env.step(idle if policy is None else policy(obs))
        episodes["truncated"] += int(truncated.sum())
        for reason in ("collision", "off_road", "too_far", "fell_behind"):
            episodes[reason] = episodes.get(reason, 0) + int(info[reason].sum())
        summary.add(env.require_worlds()[0], int(info["collision"].sum()), reward)
    return episodes


def _simulate_scenario(
    scenario: Scenario,
    policy: Callable[[TrafficState], tuple[Tensor, Tensor]] | None,
    steps: int,
    batch_size: int,
    seed: int,
    summary: Summary,
) -> None:
    generator = torch.Generator().manual_seed(seed)
    state, drivers = scenario.sample(batch_size, generator=generator)
    for result in scenario.play(state, drivers, steps, policy, generator):
        summary.add(result.state, int(result.collided.sum()), None)


# -- argument parsing ------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _add_common(parser: argparse.ArgumentParser, steps: int) -> None:
    parser.add_argument(
        "scenario",
        help=f"a pace-car variant ({', '.join(PACE_CAR_VARIANTS)}) or a scenario-builder "
        "function 'package.module:function' or 'path/to/file.py:function' (no arguments, "
        "returns a difftraffic.Scenario)",
    )
    parser.add_argument(
        "--steps", type=_positive_int, default=steps, help=f"simulation steps (default {steps})"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--policy",
        default=None,
        metavar="{weave,random,idle,PATH}",
        help="what drives the autonomous vehicles: 'weave' (a scripted pace car that weaves "
        "across the lanes; pace-car variants only), 'random' (uniform random actions), 'idle' "
        "(zero actions: the AVs coast), or PATH: a trained difftraffic_rl run directory or its "
        "exported policy.pt2 (pace-car variants); "
        "default weave for pace-car variants, idle otherwise",
    )
    parser.add_argument(
        "--lane-membership",
        choices=LANE_MEMBERSHIPS,
        default=None,
        help="pace-car variants: which lanes a car blocks, 'body' (every lane its body overlaps; "
        "the default) or 'center' (the lane of its nearest centre, as in the GI-PPO authors' "
        "simulator); use the rule a policy was trained with",
    )
    parser.add_argument(
        "--av-kinematics",
        choices=AV_KINEMATICS,
        default=None,
        help="pace-car variants: the pace car's motion, 'rear_axle' (the default) or "
        "'highway_env' (highway-env's bicycle, as in the GI-PPO authors' simulator); use the "
        "model a policy was trained with",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``difftraffic``."""
    parser = argparse.ArgumentParser(
        prog="difftraffic",
        description="Simulate or render difftraffic scenarios (headless rendering works).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    render = commands.add_parser(
        "render",
        help="roll a scenario out and write a video of one world",
        description="Roll a scenario out and write an MP4 (H.264) or GIF of one world.",
    )
    _add_common(render, steps=300)
    render.add_argument(
        "--out", default="rollout.mp4", help="output file, .mp4 or .gif (default rollout.mp4)"
    )
    render.add_argument(
        "--world", type=_non_negative_int, default=0, help="world to draw, < --batch (default 0)"
    )
    render.add_argument(
        "--batch", type=_positive_int, default=1, help="number of worlds simulated (default 1)"
    )
    render.add_argument("--width", type=int, default=960, help="frame width in px (default 960)")
    render.add_argument("--height", type=int, default=540, help="frame height in px (default 540)")
    render.add_argument(
        "--camera",
        choices=("follow", "road"),
        default="follow",
        help="follow a vehicle or frame the whole road (default follow)",
    )
    render.add_argument(
        "--follow",
        type=_non_negative_int,
        default=None,
        help="vehicle slot the camera follows (default: the first autonomous vehicle)",
    )
    render.add_argument(
        "--zoom",
        type=float,
        default=None,
        help="px per metre (default 8 when following, fitted when framing the road)",
    )
    render.add_argument(
        "--speed-colors", action="store_true", help="colour human drivers by speed, with a legend"
    )
    render.add_argument(
        "--fps", type=float, default=None, help="video frame rate (default real time, 1/dt)"
    )
    render.add_argument("--quiet", action="store_true", help="no progress bar")
    render.set_defaults(handler=render_command)

    simulate = commands.add_parser(
        "simulate",
        help="run a batch of worlds and print a summary",
        description="Run a batch of worlds (no rendering) and print mean speeds, collisions "
        "and simulation throughput. Pace-car variants run as the environment (with rewards, "
        "terminations and autoreset); user scenarios run the bare simulator.",
    )
    _add_common(simulate, steps=1000)
    simulate.add_argument(
        "--batch", type=_positive_int, default=64, help="number of worlds (default 64)"
    )
    simulate.set_defaults(handler=simulate_command)
    _add_calibrate(commands)
    return parser


def _add_calibrate(commands: Any) -> None:
    calibrate = commands.add_parser(
        "calibrate",
        help="fit driver parameters to observed trajectories, all drivers at once",
        description="Fit one parameter set per follower of a trajectory CSV (columns time, "
        "vehicle_id, lane, position, speed) by gradient, each follower replayed behind its "
        "observed leader, and write the parameters with each follower's fit error.",
    )
    calibrate.add_argument("trajectories", help="CSV of observations")
    calibrate.add_argument(
        "--model",
        choices=("idm", "krauss"),
        default="idm",
        help="car-following model: idm (default) or krauss (SUMO's default, sigma = 0)",
    )
    calibrate.add_argument(
        "--objective", choices=("gap", "speed", "both"), default="gap", help="what to match"
    )
    calibrate.add_argument("--out", default="fitted.csv", help="output, .csv or .json")
    calibrate.add_argument(
        "--starts",
        type=_positive_int,
        default=None,
        help="starts per driver (default 16 for idm, 128 for krauss)",
    )
    calibrate.add_argument(
        "--schedule",
        default=None,
        help="fit stages WINDOW:ITERATIONS[:single], comma-separated: at most ITERATIONS "
        "Levenberg-Marquardt iterations on replay windows of WINDOW steps (or all), in float32 "
        "with :single (default 100:10:single,all:20 for idm, 100:3,100:10,all:20 for krauss)",
    )
    calibrate.add_argument(
        "--derivatives",
        choices=("differences", "autodiff"),
        default="differences",
        help="Jacobian by batched forward differences (default, fastest) or by automatic "
        "differentiation (exact)",
    )
    calibrate.add_argument("--time-limit", type=float, default=None, help="seconds, at most")
    calibrate.add_argument(
        "--vehicle-length", type=float, default=5.0, help="vehicle length in m (default 5)"
    )
    calibrate.add_argument(
        "--bound",
        action="append",
        default=[],
        metavar="NAME=LOW,HIGH",
        help="search bounds of one parameter (repeatable), e.g. --bound T=0.5,3",
    )
    calibrate.add_argument("--seed", type=int, default=0, help="seed of the random starts")
    calibrate.add_argument("--quiet", action="store_true", help="no progress bar")
    calibrate.set_defaults(handler=calibrate_command)


def calibrate_command(args: argparse.Namespace) -> None:
    """``difftraffic calibrate``: read, fit, write, print a summary."""
    from difftraffic.calibration import calibrate, parse_schedule, read_trajectories, search_bounds

    bounds = search_bounds(args.model)
    for item in args.bound:
        name, _, values = item.partition("=")
        if name not in bounds:
            raise ValueError(
                f"--bound {item!r}: unknown parameter {name!r}; valid: {sorted(bounds)}"
            )
        try:
            low, high = (float(v) for v in values.split(","))
        except ValueError:
            raise ValueError(f"--bound {item!r} must look like {name}=LOW,HIGH") from None
        bounds[name] = (low, high)
    data = read_trajectories(args.trajectories, vehicle_length=args.vehicle_length)
    result = calibrate(
        data,
        model=args.model,
        objective=args.objective,
        bounds=bounds,
        starts=args.starts,
        schedule=None if args.schedule is None else parse_schedule(args.schedule),
        time_limit=args.time_limit,
        derivatives=args.derivatives,
        seed=args.seed,
        progress=not args.quiet,
    )
    out = result.save(args.out)
    print(
        f"fitted {len(result.vehicle_ids)} {args.model} drivers in {result.iterations} iterations"
        + (" (time limit reached)" if result.stopped_early else "")
        + f"; gap RMSE median {result.gap_rmse.median():.3g} m, max {result.gap_rmse.max():.3g} m"
        f"; written to {out}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``difftraffic`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except (ValueError, OSError) as error:
        parser.exit(2, f"difftraffic: error: {error}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
