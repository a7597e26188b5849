"""Reliability report: bad inputs, non-finite gradients, tunnelling, kill and resume.

Four measurements, written to ``docs/reliability.md`` (sections replaced, the rest kept):

* **Bad inputs.** Every entry of :func:`bad_inputs` is a call with one wrong argument and the word
  its error must contain (the parameter's name). It is *clear* when it raises ``ValueError`` (a
  command: exits with status 2 after one line on stderr) whose message contains the word,
  *unclear* when it fails otherwise, *silent* when it does not fail at all.
* **Non-finite sweep.** Random float32 scenarios (1-10 lanes, gaps 0-40 m, speeds 0-40 m/s, AVs
  at a constant +-8 m/s^2 with random steering), 300 steps each; counted: scenarios with a
  collision, and scenarios with any non-finite value or gradient (with respect to the AV
  accelerations and steering, the initial speeds and positions, and the drivers' headway).
* **Tunnelling.** Rings of 1-4 lanes under both lane memberships, 10,000 steps, AVs accelerating
  at random with a drift (speeds up to thousands of m/s) and changing lanes: every crossing of
  two vehicles' fronts within a step, and every negative gap after one, is checked against the
  step's collision flags.
* **Kill and resume.** ``difftraffic-rl train`` killed with SIGKILL at random moments (0-2 s
  after its fifth logged epoch); counted:
  epochs lost (logged minus checkpointed), torn log lines, and whether the resumed log equals an
  uninterrupted run's.

Usage::

    python benchmarks/reliability.py                 # all four, about 20 minutes on 2 cores
    python benchmarks/reliability.py --only inputs   # one of inputs, sweep, tunnel, kill
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from checkpoint_cost import replace_section

from difftraffic import Driver, IDMParams, PaceCarEnv, Road, ScenarioBuilder, TrafficState, step
from difftraffic import validate_step_inputs as validate
from difftraffic.neighbors import leader_gap_and_speed
from difftraffic.testing import fronts_passed, shares_a_lane
from difftraffic_rl import sweep
from difftraffic_rl.cli import main as rl_main

BAD_NUMBERS = {
    "zero": 0.0,
    "negative": -1.0,
    "nan": math.nan,
    "inf": math.inf,
    "string": "3",
    "bool": True,
    "none": None,
}


@dataclass(frozen=True)
class Case:
    """One bad input: what it is, the call, and the word its error must contain."""

    group: str
    label: str
    call: Callable[[], object]
    word: str


def _road() -> Road:
    return Road.straight(num_lanes=2, speed_limit=30.0)


def _scenario():
    return (
        ScenarioBuilder(_road())
        .platoon(lane=0, count=3, spacing=25.0, speed=10.0)
        .vehicle(lane=1, x=40.0, speed=10.0, autonomous=True)
        .build()
    )


def _sampled():
    state, drivers = _scenario().sample(batch_size=2, seed=0)
    return state, drivers


def _stepped_env(action: object) -> Callable[[], object]:
    def call() -> object:
        env = PaceCarEnv("2lane", num_envs=2, seed=0)
        env.reset(seed=0)
        return env.step(action)

    return call


def _rl(*argv: str) -> Callable[[], object]:
    """A ``difftraffic-rl`` command, failing like an exception would when it exits with 2."""

    def call() -> object:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = rl_main(list(argv))
        lines = err.getvalue().strip().splitlines()
        if status == 2 and len(lines) == 1:
            raise ValueError(lines[0])
        if status != 0:
            raise RuntimeError(f"status {status}: {err.getvalue()[-200:]}")
        return status

    return call


def bad_inputs(workdir: Path) -> Iterator[Case]:
    """The catalogue of bad inputs (one wrong argument each)."""
    for name in ("v0", "T", "a", "b", "delta", "s0"):
        for kind, value in BAD_NUMBERS.items():
            if name == "s0" and kind == "zero" or name == "v0" and kind == "none":
                continue  # valid values
            yield Case("Driver", f"{name}={kind}", lambda n=name, v=value: Driver(**{n: v}), name)
            if kind != "none":
                yield Case(
                    "IDMParams",
                    f"{name}={kind}",
                    lambda n=name, v=value: IDMParams(**{"v0": 20.0, n: v}),
                    name,
                )
    for name in ("lane_width", "speed_limit", "ring_length"):
        for kind, value in BAD_NUMBERS.items():
            if name == "ring_length" and kind == "none":
                continue
            yield Case("Road", f"{name}={kind}", lambda n=name, v=value: Road(**{n: v}), name)
    for value in (0, -1, 2.5, "2", None):
        yield Case("Road", f"num_lanes={value!r}", lambda v=value: Road(num_lanes=v), "num_lanes")
    yield Case(
        "Road",
        "lane_membership='middle'",
        lambda: Road(lane_membership="middle"),
        "lane_membership",
    )
    for name in ("dt", "length", "width"):
        for kind, value in BAD_NUMBERS.items():
            if kind == "none":
                continue
            yield Case(
                "ScenarioBuilder",
                f"{name}={kind}",
                lambda n=name, v=value: ScenarioBuilder(_road(), **{n: v}),
                name,
            )
    for name in ("x", "speed", "length", "width"):
        for kind, value in BAD_NUMBERS.items():
            if name == "x" and kind in ("zero", "negative") or name == "speed" and kind == "zero":
                continue
            if name in ("length", "width") and kind == "none":
                continue
            yield Case(
                "vehicle()",
                f"{name}={kind}",
                lambda n=name, v=value: ScenarioBuilder(_road()).vehicle(
                    **{"lane": 0, "x": 0.0, n: v}
                ),
                name,
            )
    for value in (-1, 2, 1.5, "0"):
        yield Case(
            "vehicle()",
            f"lane={value!r}",
            lambda v=value: ScenarioBuilder(_road()).vehicle(v, 0.0),
            "lane",
        )
    yield Case(
        "vehicle()",
        "x range reversed",
        lambda: ScenarioBuilder(_road()).vehicle(0, (5.0, 1.0)),
        "x",
    )
    for value in (0, -2, 1.5, "4"):
        yield Case(
            "platoon()",
            f"count={value!r}",
            lambda v=value: ScenarioBuilder(_road()).platoon(0, v),
            "count",
        )
    for kind, value in BAD_NUMBERS.items():
        if kind != "none":
            yield Case(
                "platoon()",
                f"spacing={kind}",
                lambda v=value: ScenarioBuilder(_road()).platoon(0, 2, spacing=v),
                "spacing",
            )
    yield Case("build()", "no vehicles", lambda: ScenarioBuilder(_road()).build(), "vehicle")
    yield Case(
        "build()",
        "overlapping start",
        lambda: ScenarioBuilder(_road()).vehicle(0, 0.0).vehicle(0, 2.0).build().sample(seed=0),
        "overlaps",
    )
    for value in (0, -1, 2.5, "2"):
        yield Case(
            "sample()",
            f"batch_size={value!r}",
            lambda v=value: _scenario().sample(batch_size=v, seed=0),
            "batch_size",
        )
    for dtype in (
        torch.int64,
        torch.int32,
        torch.float16,
        torch.bfloat16,
        torch.bool,
        torch.complex64,
    ):
        yield Case(
            "sample()",
            f"dtype={dtype}",
            lambda d=dtype: _scenario().sample(2, seed=0, dtype=d),
            "dtype",
        )
    for device in ("cuda:99", "banana", 3.5):
        yield Case(
            "sample()",
            f"device={device!r}",
            lambda d=device: _scenario().sample(2, seed=0, device=d),
            "device",
        )

    def with_control(name: str, value: Callable[[torch.Tensor], object]) -> Callable[[], object]:
        def call() -> object:
            state, drivers = _sampled()
            return validate(state, _road(), drivers, 0.1, **{name: value(state.x)})

        return call

    for name in ("av_acceleration", "av_steering"):
        for label, make in (
            ("wrong shape", lambda x: torch.zeros(x.shape[0], x.shape[1] - 1)),
            ("float64", lambda x: torch.zeros_like(x, dtype=torch.float64)),
            ("nan", lambda x: torch.full_like(x, math.nan)),
            ("inf", lambda x: torch.full_like(x, math.inf)),
            ("a list", lambda x: x.tolist()),
            ("one world", lambda x: torch.zeros(1, x.shape[1])),
        ):
            yield Case("validate_step_inputs", f"{name} {label}", with_control(name, make), name)
    yield Case(
        "validate_step_inputs",
        "av_steering 2 rad",
        with_control("av_steering", lambda x: torch.full_like(x, 2.0)),
        "av_steering",
    )
    for kind, value in BAD_NUMBERS.items():
        if kind != "none":
            yield Case(
                "validate_step_inputs",
                f"dt={kind}",
                lambda v=value: validate(*_sampled()[:1], _road(), _sampled()[1], v),
                "dt",
            )

    def with_drivers(change: dict) -> Callable[[], object]:
        def call() -> object:
            state, drivers = _sampled()
            return validate(state, _road(), replace(drivers, **change), 0.1)

        return call

    yield Case(
        "validate_step_inputs", "driver v0 [3, 4]", with_drivers({"v0": torch.ones(3, 4)}), "v0"
    )
    yield Case(
        "validate_step_inputs",
        "driver T float64",
        with_drivers({"T": torch.ones(2, 4, dtype=torch.float64)}),
        "T",
    )
    for kind, value in (
        ("variant", {"variant": "5lane"}),
        ("num_envs=0", {"num_envs": 0}),
        ("num_envs=2.5", {"num_envs": 2.5}),
        ("dtype=int32", {"dtype": torch.int32}),
        ("dtype=float16", {"dtype": torch.float16}),
        ("device=cuda:99", {"device": "cuda:99"}),
        ("render_mode", {"render_mode": "screen"}),
        ("target_speed=-1", {"config_overrides": {"target_speed": -1.0}}),
        ("target_speed='10'", {"config_overrides": {"target_speed": "10"}}),
        ("unknown override", {"config_overrides": {"speed": 10.0}}),
        ("lane_membership", {"config_overrides": {"lane_membership": "x"}}),
    ):
        word = {
            "variant": "variant",
            "render_mode": "render_mode",
            "unknown override": "speed",
            "lane_membership": "lane_membership",
        }.get(kind, kind.split("=")[0])
        yield Case(
            "PaceCarEnv", kind, lambda v=value: PaceCarEnv(**{"variant": "2lane", **v}), word
        )
    for label, action in (
        ("shape [2, 3]", torch.zeros(2, 3)),
        ("shape [3, 2]", torch.zeros(3, 2)),
        ("nan", torch.full((2, 2), math.nan)),
        ("inf", torch.full((2, 2), math.inf)),
        ("a string", "left"),
    ):
        yield Case("env.step()", f"actions {label}", _stepped_env(action), "action")
    run = str(workdir / "run")
    train = (
        "train",
        "--task",
        "dejong",
        "--algo",
        "ppo",
        "--epochs",
        "2",
        "--no-progress",
        "--logdir",
        str(workdir / "cli"),
    )
    for override, word in (
        ("train.num_envs=2.7", "num_envs"),
        ("train.num_envs=0", "num_envs"),
        ("train.epochs=-3", "epochs"),
        ("train.tensorboard=maybe", "tensorboard"),
        ("train.dtype=float16", "dtype"),
        ("train.device=cuda:99", "device"),
        ("actor_lr=abc", "actor_lr"),
        ("actor_lr=-1", "actor_lr"),
        ("actor_hidden=64", "actor_hidden"),
        ("horizon=0", "horizon"),
        ("gamma=1.5", "gamma"),
        ("nosuchkey=1", "nosuchkey"),
        ("train.nosuch=1", "nosuch"),
        ("train.num_envs=[1", "num_envs"),
        ("actor_lr", "actor_lr"),
        ("task_kwargs.lane_membership=center", "lane_membership"),
    ):
        yield Case("difftraffic-rl train --set", override, _rl(*train, "--set", override), word)
    for args, word in (
        (("--task", "nosuch"), "nosuch"),
        (("--task", "dejong", "--device", "cuda:99"), "device"),
    ):
        yield Case(
            "difftraffic-rl train",
            " ".join(args),
            _rl(
                "train",
                "--algo",
                "ppo",
                "--epochs",
                "1",
                "--no-progress",
                "--logdir",
                str(workdir / "cli"),
                *args,
                *(("--task", "dejong") if "--task" not in args else ()),
            ),
            word,
        )
    for args, word in (
        (("--episodes", "0"), "episodes"),
        (("--episodes", "-3"), "episodes"),
    ):
        yield Case("difftraffic-rl eval", " ".join(args), _rl("eval", run, *args), word)
    for args, word in (
        (("--task", "ackley"), "--task"),
        (("--algo", "gippo"), "--algo"),
        (("--seed", "7"), "seed"),
        (("--set", "actor_lr=1"), "actor_lr"),
        (("--logdir", "elsewhere"), "--logdir"),
        (("--epochs", "1"), "epochs"),
    ):
        yield Case(
            "difftraffic-rl train --resume",
            " ".join(args),
            _rl("train", "--resume", run, "--no-progress", *args),
            word,
        )
    for command in (
        ("eval", str(workdir / "missing")),
        ("export", str(workdir / "missing")),
        ("train", "--resume", str(workdir / "missing")),
    ):
        yield Case("difftraffic-rl", f"{command[0]} of a missing run", _rl(*command), "missing")
    yield Case(
        "difftraffic-rl",
        "train into an uncreatable logdir",
        _rl("train", "--task", "dejong", "--algo", "ppo", "--logdir", "/proc/x/y"),
        "logdir",
    )


def _prepare_run(workdir: Path) -> None:
    """A finished 3-epoch De Jong run at ``workdir/run`` for the eval and resume cases."""
    import difftraffic_rl

    difftraffic_rl.train(
        "dejong",
        "ppo",
        seed=1,
        epochs=3,
        logdir=workdir,
        progress=False,
        run_name="run",
        overrides=["train.tensorboard=false"],
    )


def classify(case: Case) -> tuple[str, str]:
    """``("clear" | "unclear" | "silent", message)``."""
    try:
        case.call()
    except ValueError as error:
        message = str(error).splitlines()[0] if str(error) else ""
        verdict = "clear" if case.word in message else "unclear"
        return verdict, message
    except Exception as error:  # every other failure is, by definition, unclear
        return (
            "unclear",
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
        )
    return "silent", ""


def nonfinite_sweep(count: int, steps: int = 300, seed: int = 0) -> dict[str, int]:
    """Random float32 scenarios (see the module docstring): how many collided, how many produced
    a non-finite value or gradient."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    collided = nonfinite = 0
    for k in range(count):
        road = Road.straight(
            num_lanes=int(torch.randint(1, 11, (), generator=generator)), speed_limit=30.0
        )
        builder = ScenarioBuilder(road)
        for lane in range(road.num_lanes):
            x = 0.0
            for _ in range(int(torch.randint(1, 6, (), generator=generator))):
                builder.vehicle(lane, x, uniform(0.0, 40.0), autonomous=uniform(0, 1) < 0.2)
                x += builder.length + uniform(0.0, 40.0)
        scenario = builder.build()
        state, drivers = scenario.sample(batch_size=4, seed=k)
        x0 = state.x.clone().requires_grad_(True)
        v0 = state.v.clone().requires_grad_(True)
        headway = drivers.T.clone().requires_grad_(True)
        state, drivers = state.replace(x=x0, v=v0), replace(drivers, T=headway)
        shape = (steps, *state.x.shape)
        signs = torch.where(torch.rand(state.x.shape, generator=generator) < 0.5, -1.0, 1.0)
        acceleration = (8.0 * signs).expand(shape).clone().requires_grad_(True)
        steering = (0.3 * (torch.rand(shape, generator=generator) * 2 - 1)).requires_grad_(True)
        total, neighbors, hit = torch.zeros(()), None, False
        for t in range(steps):
            result = step(
                state, road, drivers, scenario.dt, acceleration[t], steering[t], neighbors
            )
            state, neighbors = result.state, result.neighbors
            hit = hit or bool(result.collided.any())
            total = total + state.v.mean() + 0.01 * state.x.mean()
        total.backward()
        values = (total, acceleration.grad, steering.grad, x0.grad, v0.grad, headway.grad)
        collided += hit
        nonfinite += not all(bool(torch.isfinite(v).all()) for v in values)
    return {"scenarios": count, "collided": collided, "nonfinite": nonfinite}


TUNNEL_WORLDS = 8


def tunnel_sweep(steps: int, worlds: int, seed: int = 0) -> list[dict[str, float]]:
    """Rings with AVs changing lanes at any speed (see the module docstring): one row per ring
    (1-4 lanes, both lane memberships) with its event counts and how many went unflagged."""
    return [
        _tunnel_ring(Road.ring(230.0, lanes, lane_membership=membership), steps, worlds, seed)
        for membership in ("body", "center")
        for lanes in (1, 2, 3, 4)
    ]


def _steer_towards(state: TrafficState, target_y: torch.Tensor, dt: float) -> torch.Tensor:
    """Steering (rad) that moves each car sideways towards ``target_y`` at up to 3 m/s, whatever
    its speed, keeping its heading within 0.3 rad of the road's."""
    speed = state.v.clamp_min(1.0)
    lateral = (0.5 * (target_y - state.y)).clamp(-3.0, 3.0)
    heading = torch.asin((lateral / speed).clamp(-0.3, 0.3))
    yaw_rate = 0.5 * (heading - state.heading) / dt
    return torch.atan(0.6 * state.length * yaw_rate / speed)


def _tunnel_ring(road: Road, steps: int, worlds: int, seed: int) -> dict[str, float]:
    builder = ScenarioBuilder(road)
    for lane in range(road.num_lanes):
        for k in range(4):
            builder.vehicle(lane, 57.5 * k + 10.0 * lane, 8.0, autonomous=k == 0)
    state, drivers = builder.build().sample(batch_size=worlds, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    # A per-world drift of 0-2 m/s^2 on top of U(-8, 8): some AVs reach thousands of m/s.
    drift = 2.0 * torch.rand(worlds, 1, generator=generator)
    target_y, neighbors = state.y.clone(), None
    counts = dict.fromkeys(("same_lane", "lane_change", "negative_gap"), 0)
    unflagged = dict(counts)
    top_speed = 0.0
    for _ in range(steps):
        new_lane = torch.randint(0, road.num_lanes, state.x.shape, generator=generator)
        redraw = torch.rand(state.x.shape, generator=generator) < 0.01
        target_y = torch.where(redraw, road.lane_width * (new_lane + 0.5), target_y)
        acceleration = 16.0 * torch.rand(state.x.shape, generator=generator) - 8.0 + drift
        steering = _steer_towards(state, target_y, builder.dt)
        result = step(state, road, drivers, builder.dt, acceleration, steering, neighbors)
        new, neighbors, collided = result.state, result.neighbors, result.collided
        passed = fronts_passed(state, new, road, builder.dt)
        before, after = shares_a_lane(state, road), shares_a_lane(new, road)
        flagged = collided.unsqueeze(2) | collided.unsqueeze(1)
        gap, _ = leader_gap_and_speed(new, neighbors, road)
        for name, events, seen in (
            ("same_lane", passed & before & after, flagged),
            ("lane_change", passed & (before ^ after), flagged),
            ("negative_gap", neighbors.has_leader & (gap < 0), collided),
        ):
            counts[name] += int(events.sum())
            unflagged[name] += int((events & ~seen).sum())
        top_speed = max(top_speed, float(new.v.max()))
        state = new
    return {
        "lanes": road.num_lanes,
        "membership": road.lane_membership,
        "top_speed": top_speed,
        **counts,
        **{f"unflagged_{name}": n for name, n in unflagged.items()},
    }


def kill_and_resume(kills: int, seed: int = 0) -> list[dict[str, float]]:
    """SIGKILL ``difftraffic-rl train`` a random 0-2 s after its fifth logged epoch, then resume
    it; one row a kill."""
    from difftraffic_rl.training import CHECKPOINT, load_checkpoint, resume

    generator = torch.Generator().manual_seed(seed)
    rows = []
    for k in range(kills):
        with tempfile.TemporaryDirectory() as tmp:
            logdir = Path(tmp)
            command = [
                sys.executable,
                "-m",
                "difftraffic_rl",
                "train",
                "--task",
                "dejong",
                "--algo",
                "gippo",
                "--seed",
                str(k),
                "--epochs",
                "100000",
                "--logdir",
                str(logdir / "killed"),
                "--no-progress",
                "--set",
                "train.tensorboard=false",
            ]
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not any(
                len(p.read_text().splitlines()) > 5 for p in logdir.glob("killed/*/progress.csv")
            ):
                time.sleep(0.05)
            time.sleep(2.0 * float(torch.rand((), generator=generator)))
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            (run_dir,) = (logdir / "killed").iterdir()
            with (run_dir / "progress.csv").open(newline="") as handle:
                header, *lines = list(csv.reader(handle))
            torn = sum(len(line) != len(header) for line in lines)
            logged = int(float(lines[-1][0])) if lines else 0
            saved = int(load_checkpoint(run_dir / CHECKPOINT)["epoch"])
            target = logged + 3
            resume(run_dir, progress=False, stop_after=target - saved)
            exact = logged_rows(run_dir) == _uninterrupted_rows(k, target, logdir / "full")
            rows.append(
                {
                    "logged": logged,
                    "saved": saved,
                    "lost": logged - saved,
                    "torn": torn,
                    "exact": exact,
                }
            )
    return rows


def logged_rows(run_dir: Path) -> list[dict[str, str]]:
    """A run's logged rows without the timing columns."""
    with (run_dir / "progress.csv").open(newline="") as handle:
        return [
            {k: v for k, v in row.items() if not k.endswith("time")}
            for row in csv.DictReader(handle)
        ]


class _StopError(Exception):
    pass


def _uninterrupted_rows(seed: int, epochs: int, logdir: Path) -> list[dict[str, str]]:
    import difftraffic_rl

    def stop(row: dict[str, float]) -> None:
        if row["epoch"] == epochs:
            raise _StopError

    with contextlib.suppress(_StopError):
        difftraffic_rl.train(
            "dejong",
            "gippo",
            seed=seed,
            epochs=100000,
            logdir=logdir,
            progress=False,
            callback=stop,
            overrides=["train.tensorboard=false"],
        )
    (run_dir,) = logdir.iterdir()
    return logged_rows(run_dir)


def inputs_section(results: list[tuple[Case, str, str]]) -> str:
    """The bad-input table: counts per group, then every case that is not clear."""
    groups: dict[str, dict[str, int]] = {}
    for case, verdict, _ in results:
        counts = groups.setdefault(case.group, {"clear": 0, "unclear": 0, "silent": 0})
        counts[verdict] += 1
    total = {v: sum(c[v] for c in groups.values()) for v in ("clear", "unclear", "silent")}
    lines = [
        "## Bad inputs",
        "",
        f"{len(results)} calls with one wrong argument each (`benchmarks/reliability.py`, "
        "`bad_inputs`). *Clear*: a `ValueError` (a command: status 2 and one line) naming the "
        "parameter; *unclear*: any other failure; *silent*: no failure.",
        "",
        "| where | inputs | clear | unclear | silent |",
        "|---|---:|---:|---:|---:|",
    ]
    for group, counts in groups.items():
        lines.append(
            f"| {group} | {sum(counts.values())} | {counts['clear']} | "
            f"{counts['unclear']} | {counts['silent']} |"
        )
    lines.append(
        f"| **all** | **{len(results)}** | **{total['clear']}** | "
        f"**{total['unclear']}** | **{total['silent']}** |"
    )
    rest = [(c, v, m) for c, v, m in results if v != "clear"]
    if rest:
        lines += ["", "Not clear:", ""]
        lines += [f"- {c.group} `{c.label}`: {v}{f' ({m})' if m else ''}" for c, v, m in rest]
    samples = [(c, m) for c, v, m in results if v == "clear"][::40]
    lines += ["", "A sample of the messages:", ""]
    lines += [f"- {c.group} `{c.label}`: `{m}`" for c, m in samples]
    return "\n".join(lines) + "\n"


def sweep_section(counts: dict[str, int]) -> str:
    return "\n".join(
        [
            "## Non-finite values and gradients",
            "",
            f"{counts['scenarios']} random float32 scenarios of 300 steps (1-10 lanes, "
            "gaps 0-40 m, speeds 0-40 m/s, AVs at a constant ±8 m/s² with random steering up "
            "to 0.3 rad; gradients with respect to the AV accelerations and steering, the "
            "initial positions and speeds and the drivers' headway):",
            "",
            "| scenarios | with a collision | with a non-finite value or gradient |",
            "|---:|---:|---:|",
            f"| {counts['scenarios']} | {counts['collided']} | {counts['nonfinite']} |",
            "",
        ]
    )


def tunnel_section(rows: list[dict[str, float]], steps: int, worlds: int) -> str:
    lines = [
        "## Tunnelling and negative gaps",
        "",
        f"{worlds} float32 worlds per ring of 230 m, {steps} steps (0.1 s): 4 vehicles per lane, "
        "one an AV accelerating at U(-8, 8) m/s² plus a drift of 0-2 m/s² per world and steering "
        "towards a lane centre redrawn now and then (lateral speed up to 3 m/s at any speed). "
        "*Passes*: one vehicle's front passing another's within a step "
        "(`difftraffic.testing.fronts_passed`, from the start positions and the step's own "
        "displacements, through the ring's start too), in a lane they share at both ends of "
        "the step (*same lane*) or at one end only (*changing lane*); *negative gaps*: a "
        "vehicle overlapping its leader after a step. *Unflagged*: the step reported no "
        "collision for either vehicle.",
        "",
        "| lanes | membership | top AV speed (m/s) | same-lane passes | unflagged "
        "| passes changing lane | unflagged | negative gaps | unflagged |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['lanes']} | {row['membership']} | {row['top_speed']:.0f} "
            f"| {row['same_lane']} | {row['unflagged_same_lane']} "
            f"| {row['lane_change']} | {row['unflagged_lane_change']} "
            f"| {row['negative_gap']} | {row['unflagged_negative_gap']} |"
        )
    return "\n".join(lines) + "\n"


def kill_section(rows: list[dict[str, float]]) -> str:
    lines = [
        "## Kill and resume",
        "",
        "`difftraffic-rl train --task dejong --algo gippo` killed with SIGKILL 0-2 s after its "
        "fifth logged epoch, then "
        "resumed 3 epochs past the last logged one and compared with an uninterrupted run "
        "(every logged column except the timings):",
        "",
        "| kill | epochs logged | checkpoint epoch | epochs lost | torn log lines | resumed log "
        "equals the uninterrupted one |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for k, row in enumerate(rows, 1):
        lines.append(
            f"| {k} | {row['logged']} | {row['saved']} | {row['lost']} | {row['torn']} "
            f"| {'yes' if row['exact'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        choices=("inputs", "sweep", "tunnel", "kill"),
        action="append",
        help="run only these parts (repeatable; default all)",
    )
    parser.add_argument("--scenarios", type=int, default=400, help="non-finite sweep size")
    parser.add_argument("--ring-steps", type=int, default=10_000, help="steps per ring")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--out", default="docs/reliability.md")
    args = parser.parse_args()
    parts = args.only or ["inputs", "sweep", "tunnel", "kill"]
    sections = []
    if "inputs" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            _prepare_run(workdir)
            results = [(case, *classify(case)) for case in bad_inputs(workdir)]
        sections.append(inputs_section(results))
        print(sections[-1])
    if "sweep" in parts:
        sections.append(sweep_section(nonfinite_sweep(args.scenarios)))
        print(sections[-1])
    if "tunnel" in parts:
        rows = tunnel_sweep(args.ring_steps, TUNNEL_WORLDS)
        sections.append(tunnel_section(rows, args.ring_steps, TUNNEL_WORLDS))
        print(sections[-1])
    if "kill" in parts:
        sections.append(kill_section(kill_and_resume(args.kills)))
        print(sections[-1])
    out = Path(args.out)
    page = out.read_text() if out.exists() else "# Reliability\n"
    stamp = (
        f"Measured by `python benchmarks/reliability.py` at commit "
        f"`{sweep.source_commit()}` on {time.strftime('%Y-%m-%d')}.\n\n"
    )
    for section in sections:
        heading, _, body = section.partition("\n\n")
        page = replace_section(page, f"{heading}\n\n{stamp}{body}")
    out.write_text(page)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
