"""Simulator throughput: vehicle-steps per second, forward and forward+backward.

For every road (a 4-lane straight road and a 1-lane ring) and world size ``B x N`` this times a
100-step rollout of :func:`difftraffic.dynamics.step` on each path: ``eager`` (torch operations),
``fused`` (:mod:`difftraffic.fused`) and ``compile`` (``torch.compile`` of the
eager step):

* forward: the rollout under ``torch.no_grad()`` (simulation only);
* forward+backward: the rollout with autograd recording, then the backward pass of a scalar of the
  final state (sum of positions and speeds) to the AV actions (acceleration and steering of every
  step) and the initial positions and speeds.

Each measurement is warmed up first (which also triggers compilation with ``--compile``) and the
median of several repeats is reported. Results go to a markdown table (``--out``).

Usage::

    python benchmarks/sim_throughput.py --out docs/benchmarks.md          # eager, fused, compiled
    python benchmarks/sim_throughput.py --quick                           # smoke run, prints only
    python benchmarks/sim_throughput.py --device cuda --sizes 1x10 4096x40 16384x40
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from difftraffic import fused
from difftraffic.compile import compile_step
from difftraffic.dynamics import step
from difftraffic.idm import IDMParams
from difftraffic.road import Road
from difftraffic.state import TrafficState

STEPS = 100
DT = 0.1
SPACING = 30.0
"""Distance (m) between consecutive vehicles of one lane at the start."""

SUMO_MAX_VEHICLES = 1000
"""SUMO runs one world: a row of B x N vehicles is compared with one SUMO world of
min(B N, 1000) vehicles on the same 4-lane road (SUMO's rate is flat from a few hundred on)."""

TARGET_FORWARD_VS_SUMO = 50.0
TARGET_BACKWARD_VS_SUMO = 20.0
TARGET_CASE = ("4-lane straight", 1024, 16)
PAIRS = 7
"""Alternations of ours and SUMO's measurements behind each ratio to SUMO of a target."""
LARGE_CASES = (("4-lane straight", 4096, 40), ("4-lane straight", 256, 1000))
"""Issue 13: per-vehicle throughput at these sizes no lower than at :data:`TARGET_CASE`."""
SINGLE_WORLD_CASE = ("4-lane straight", 1, 100)
"""Issue 13: one step of this world no slower than SUMO's step of the same world."""

NOTES = """\
## Why a C pass per world, and what bounds each path

- **eager** runs about 160 ATen operations per step (IDM, bicycle model, integration, leader
  search, collision test). One small world is bound by their dispatch (1 to 1.5 µs each
  whatever the tensor size); large batches by memory traffic, since each operation writes a
  fresh `[B, N]` (or `[B, N, L]`, `[B, N, N]`) temporary, plus `argsort` and, up to 64
  vehicles per world, the pairwise `[B, N, N]` leader table. Forward+backward records about 60
  differentiable operations per step and replays them.
- **compile** (`torch.compile`, inductor) fuses the elementwise work into two or three C++ loops,
  but on this host its kernels do not beat ATen's at batch, `argsort` stays an ATen call, and
  each shape compiles for seconds; it pays for one small world only.
- **fused** (`difftraffic.fused`) is one call into C per step: per world, one loop computes the
  IDM, the bicycle model and the integration vehicle by vehicle, a walk over the vehicles in
  `(x, index)` order (kept across steps, repaired by insertion sort: `O(N L)`, no `N^2` table)
  finds the leaders, and a last loop the collisions; worlds are spread over the threads. The
  backward pass is one hand-written loop per world in reverse. What remains is the arithmetic
  (`cos`, `sin`, `tan` of steered cars, a division or two per vehicle), about 20 to 30 M
  vehicle-steps/s per core, and for one small world the ~40 µs of the Python call (argument
  marshalling through ctypes).
- Why plain C through `ctypes` rather than the alternatives (measured on this machine, one
  core busy with other work): a PyTorch C++ extension (`torch.utils.cpp_extension.load_inline`)
  took 35 s to build a one-line operator (the torch headers), against about a second for this
  file with the system C compiler, and must be rebuilt for each torch build; Triton has no CPU
  backend; Warp (only in the optional `physics` extra) took 3.5 s to build a 12-array kernel for
  the CPU, then 22 µs per launch, plus 180 µs to wrap 12 torch tensors with `wp.from_torch` on
  every call, against about 45 µs for the whole fused step of one small world. The C file needs
  nothing beyond libm and OpenMP (torch's own OpenMP runtime is the one used).
- Timings on 2 shared cores vary with other load: the load average printed above is the
  machine's at the start and end of the run.
"""

SIZES = [(1, 10), (1, 100), (64, 16), (1024, 16), (4096, 40), (256, 1000)]
QUICK_SIZES = [(1, 10), (64, 16)]

StepFn = Callable[..., object]


@dataclass(frozen=True)
class World:
    """A benchmark world: road, initial state ``[B, N]``, drivers and AV controls ``[T, B, N]``."""

    name: str
    road: Road
    state: TrafficState
    idm: IDMParams
    av_acceleration: Tensor
    av_steering: Tensor

    @property
    def vehicle_steps(self) -> int:
        return self.state.batch_size * self.state.num_vehicles * STEPS


def make_world(
    name: str, road: Road, batch: int, vehicles: int, seed: int = 0, device: str = "cpu"
) -> World:
    """Vehicles spread round-robin over the lanes, ``SPACING`` apart; slot 0 of each world is an AV.

    On the ring the circumference is chosen so that every lane keeps the same spacing. The draws
    are made on the CPU, so every device times the same world.
    """
    gen = torch.Generator().manual_seed(seed)
    index = torch.arange(vehicles)
    lane = index % road.num_lanes
    x = (index // road.num_lanes).to(torch.float32) * SPACING
    x = x + torch.rand(batch, vehicles, generator=gen) * 2.0
    y = ((lane.to(torch.float32) + 0.5) * road.lane_width).expand(batch, vehicles)
    v = 10.0 + 10.0 * torch.rand(batch, vehicles, generator=gen)
    zeros = torch.zeros(batch, vehicles)
    is_av = (index == 0).expand(batch, vehicles)
    state = TrafficState(
        x=x,
        y=y.clone(),
        v=v,
        heading=zeros,
        length=torch.full((batch, vehicles), 5.0),
        width=torch.full((batch, vehicles), 2.0),
        is_av=is_av.clone(),
        active=torch.ones(batch, vehicles, dtype=torch.bool),
    )
    av_acceleration = torch.randn(STEPS, batch, vehicles, generator=gen)
    av_steering = 0.002 * torch.randn(STEPS, batch, vehicles, generator=gen)
    state = state.to(device)
    return World(
        name,
        road,
        state,
        IDMParams(v0=road.speed_limit).to(state.x),
        av_acceleration.to(device),
        av_steering.to(device),
    )


def make_worlds(sizes: list[tuple[int, int]], device: str = "cpu") -> list[World]:
    """The 4-lane straight road and the 1-lane ring at every size."""
    worlds = []
    for batch, vehicles in sizes:
        straight = Road.straight(num_lanes=4, speed_limit=30.0)
        ring = Road.ring(length=vehicles * SPACING, num_lanes=1, speed_limit=30.0)
        worlds.append(make_world("4-lane straight", straight, batch, vehicles, device=device))
        worlds.append(make_world("1-lane ring", ring, batch, vehicles, device=device))
    return worlds


def run_rollout(
    step_fn: StepFn,
    world: World,
    state: TrafficState,
    acc: Tensor | list[Tensor],
    steer: Tensor | list[Tensor],
) -> TrafficState:
    """The final state after ``STEPS`` steps, reusing each step's neighbours in the next."""
    neighbors = None
    for t in range(STEPS):
        result = step_fn(state, world.road, world.idm, DT, acc[t], steer[t], neighbors)
        state, neighbors = result.state, result.neighbors
    return state


def finish(world: World) -> None:
    """Wait for the world's device to finish queued work (GPU kernels run asynchronously)."""
    if world.state.x.device.type == "cuda":
        torch.cuda.synchronize(world.state.x.device)


def forward_seconds(step_fn: StepFn, world: World) -> float:
    """Wall time (s) of one rollout without autograd."""
    finish(world)
    start = time.perf_counter()
    with torch.no_grad():
        run_rollout(step_fn, world, world.state, world.av_acceleration, world.av_steering)
    finish(world)
    return time.perf_counter() - start


def backward_seconds(step_fn: StepFn, world: World) -> float:
    """Wall time (s) of one rollout with autograd plus the backward pass to actions and state.

    Each step's actions are their own leaf tensors: slicing one ``[T, B, N]`` leaf would make
    every step's backward write a ``[T, B, N]`` gradient, ``O(T^2 B N)`` work for the harness.
    """
    acc = [a.clone().requires_grad_(True) for a in world.av_acceleration]
    steer = [s.clone().requires_grad_(True) for s in world.av_steering]
    x0 = world.state.x.clone().requires_grad_(True)
    v0 = world.state.v.clone().requires_grad_(True)
    finish(world)
    start = time.perf_counter()
    final = run_rollout(step_fn, world, world.state.replace(x=x0, v=v0), acc, steer)
    (final.x.sum() + final.v.sum()).backward()
    finish(world)
    return time.perf_counter() - start


def median_seconds(measure: Callable[[], float], budget_s: float, min_repeats: int = 3) -> float:
    """Median of repeated measurements after one warm-up run, within about ``budget_s``."""
    warmup = measure()
    repeats = max(min_repeats, min(20, int(budget_s / max(warmup, 1e-6))))
    return statistics.median(measure() for _ in range(repeats))


@dataclass(frozen=True)
class Row:
    """One measured case: throughputs in vehicle-steps/s and the forward time per step (µs)."""

    mode: str
    road: str
    batch: int
    vehicles: int
    forward: float
    backward: float
    step_us: float
    sumo: float | None = None
    """SUMO's vehicle-steps/s on one world of min(B N, 1000) vehicles, measured in this run."""


def step_function(mode: str) -> StepFn:
    """The step of a mode: ``"eager"``, ``"fused"`` or ``"compile"``."""
    if mode == "compile":
        # Compiled graphs are cached per function: start each case from an empty cache so
        # that earlier cases do not use up the recompile limit.
        torch._dynamo.reset()
        return compile_step()
    return functools.partial(step, path=mode)


def benchmark(worlds: list[World], modes: list[str], budget_s: float) -> list[Row]:
    """Time every world in every mode (``"eager"``, ``"fused"``, ``"compile"``)."""
    rows = []
    jobs = [(mode, world) for mode in modes for world in worlds]
    for mode, world in tqdm(jobs, desc="sim throughput", unit="case"):
        step_fn = step_function(mode)
        forward = median_seconds(lambda f=step_fn, w=world: forward_seconds(f, w), budget_s)
        backward = median_seconds(lambda f=step_fn, w=world: backward_seconds(f, w), budget_s)
        state = world.state
        rows.append(
            Row(
                mode,
                world.name,
                state.batch_size,
                state.num_vehicles,
                world.vehicle_steps / forward,
                world.vehicle_steps / backward,
                forward / STEPS * 1e6,
            )
        )
    return rows


def machine_description(device: str = "cpu") -> str:
    """CPU model, core count, torch version and threads (and the GPU when timed on one), as one
    line."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            names = [
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpu = f"{torch.cuda.get_device_name(device)} (timed), " if device.startswith("cuda") else ""
    return (
        f"{gpu}{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads, Python {platform.python_version()}"
    )


def format_rate(rate: float) -> str:
    """A rate in vehicle-steps/s as ``"12.34 M"`` or ``"56.7 k"``."""
    return f"{rate / 1e6:.2f} M" if rate >= 1e5 else f"{rate / 1e3:.1f} k"


def with_sumo(rows: list[Row]) -> list[Row]:
    """``rows`` with SUMO measured now, on this machine, for every 4-lane straight row (one
    SUMO world per distinct vehicle count, see :data:`SUMO_MAX_VEHICLES`)."""
    from sumo_speed import sumo_rate

    rates: dict[int, float | None] = {}
    measured = []
    for r in rows:
        if r.road != "4-lane straight":
            measured.append(r)
            continue
        n = min(r.batch * r.vehicles, SUMO_MAX_VEHICLES)
        if n not in rates:
            rates[n] = sumo_rate(n, lanes=4, spacing=SPACING, steps=STEPS)
        measured.append(replace(r, sumo=rates[n]))
    return measured


@dataclass(frozen=True)
class Paired:
    """Ratios to SUMO of one mode on :data:`TARGET_CASE`, from measurements that alternate with
    SUMO's, so that a change of the machine's load between them cancels out."""

    forward: list[float]
    backward: list[float]

    @staticmethod
    def describe(ratios: list[float]) -> str:
        return f"median of {len(ratios)} alternations, range {min(ratios):.1f}-{max(ratios):.1f}×"


def paired_with_sumo(worlds: list[World], modes: list[str], pairs: int) -> dict[str, Paired]:
    """Per mode, ``pairs`` ratios of our forward and forward+backward rates on
    :data:`TARGET_CASE` to SUMO's on one world of :data:`SUMO_MAX_VEHICLES`, each of ours timed
    right after a SUMO run of the same number of steps. Empty where SUMO or the case is
    missing."""
    from sumo_speed import sumo_world

    world = next((w for w in worlds if world_key(w) == TARGET_CASE), None)
    if world is None:
        return {}
    try:
        with sumo_world(SUMO_MAX_VEHICLES, lanes=4, spacing=SPACING) as sumo:
            paired = {}
            for mode in modes:
                step_fn = step_function(mode)
                forward_seconds(step_fn, world)  # warm-up (and compilation)
                backward_seconds(step_fn, world)
                forward, backward = [], []
                for _ in range(pairs):
                    rate = sumo(STEPS)
                    forward.append(world.vehicle_steps / forward_seconds(step_fn, world) / rate)
                    rate = sumo(STEPS)
                    backward.append(world.vehicle_steps / backward_seconds(step_fn, world) / rate)
                paired[mode] = Paired(forward, backward)
            return paired
    except ImportError:
        return {}


PerVehicle = dict[str, dict[tuple[str, int, int], list[float]]]
"""Per mode and case of :data:`LARGE_CASES`: paired per-vehicle rate ratios to
:data:`TARGET_CASE`."""


def paired_per_vehicle(worlds: list[World], modes: list[str], pairs: int) -> PerVehicle:
    """Per mode, ``pairs`` ratios of each large case's per-vehicle forward rate to
    :data:`TARGET_CASE`'s, each large rollout timed right after one of the target case, so that
    a change of the machine's load between them cancels out (one-shot medians measured minutes
    apart moved these ratios by 0.7-1.6x on this machine)."""
    by_key = {world_key(w): w for w in worlds}
    target = by_key.get(TARGET_CASE)
    large = [by_key[case] for case in LARGE_CASES if case in by_key]
    if target is None or not large:
        return {}
    result: PerVehicle = {}
    for mode in modes:
        step_fn = step_function(mode)
        ratios: dict[tuple[str, int, int], list[float]] = {world_key(w): [] for w in large}
        for world in (target, *large):
            forward_seconds(step_fn, world)  # warm-up (and compilation)
        for _ in range(pairs):
            for world in large:
                reference = target.vehicle_steps / forward_seconds(step_fn, target)
                rate = world.vehicle_steps / forward_seconds(step_fn, world)
                ratios[world_key(world)].append(rate / reference)
        result[mode] = ratios
    return result


def world_key(world: World) -> tuple[str, int, int]:
    return (world.name, world.state.batch_size, world.state.num_vehicles)


def table(rows: list[Row]) -> str:
    """The results as a markdown table, with the ratios to SUMO measured in the same run."""
    lines = [
        "| mode | road | B×N | forward (veh-steps/s) | fwd+bwd (veh-steps/s) "
        "| µs/step (fwd) | SUMO, one world of min(B·N, 1000) | forward / SUMO "
        "| fwd+bwd / SUMO |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        sumo = "not measured" if r.sumo is None else format_rate(r.sumo)
        ratio = "–" if r.sumo is None else f"{r.forward / r.sumo:.1f}×"
        backward_ratio = "–" if r.sumo is None else f"{r.backward / r.sumo:.1f}×"
        lines.append(
            f"| {r.mode} | {r.road} | {r.batch}×{r.vehicles} | {format_rate(r.forward)} "
            f"| {format_rate(r.backward)} | {r.step_us:.0f} | {sumo} | {ratio} | {backward_ratio} |"
        )
    return "\n".join(lines)


def target_lines(
    rows: list[Row], paired: dict[str, Paired], per_vehicle: PerVehicle | None = None
) -> list[str]:
    """Issue 13's targets, one line per mode and target: met, or missed by what factor. The
    ratios to SUMO are the paired ones (:func:`paired_with_sumo`) and the per-vehicle ratios
    those of :func:`paired_per_vehicle` where measured; else the table's."""
    lines = []
    for mode in dict.fromkeys(r.mode for r in rows):
        case = {(r.road, r.batch, r.vehicles): r for r in rows if r.mode == mode}
        target = case.get(TARGET_CASE)
        what = f"{TARGET_CASE[1]}×{TARGET_CASE[2]} {TARGET_CASE[0]}"
        if mode in paired:
            for name, ratios, goal in (
                ("forward", paired[mode].forward, TARGET_FORWARD_VS_SUMO),
                ("forward+backward", paired[mode].backward, TARGET_BACKWARD_VS_SUMO),
            ):
                value = statistics.median(ratios)
                lines.append(
                    _versus(mode, f"{name} {what} / SUMO ({Paired.describe(ratios)})", value, goal)
                )
        elif target is not None and target.sumo is not None:
            lines.append(
                _versus(
                    mode,
                    f"forward {what} / SUMO",
                    target.forward / target.sumo,
                    TARGET_FORWARD_VS_SUMO,
                )
            )
            lines.append(
                _versus(
                    mode,
                    f"forward+backward {what} / SUMO",
                    target.backward / target.sumo,
                    TARGET_BACKWARD_VS_SUMO,
                )
            )
        for large in LARGE_CASES:
            what = f"forward {large[1]}×{large[2]} / {TARGET_CASE[1]}×{TARGET_CASE[2]} per vehicle"
            ratios = (per_vehicle or {}).get(mode, {}).get(large)
            if ratios:
                value = statistics.median(ratios)
                lines.append(_versus(mode, f"{what} ({Paired.describe(ratios)})", value, 1.0))
            elif target is not None and large in case:
                lines.append(_versus(mode, what, case[large].forward / target.forward, 1.0))
        single = case.get(SINGLE_WORLD_CASE)
        if single is not None and single.sumo is not None:
            sumo_step_us = SINGLE_WORLD_CASE[2] / single.sumo * 1e6
            lines.append(
                _versus(
                    mode,
                    f"one world of {SINGLE_WORLD_CASE[2]}: SUMO's step time / ours "
                    f"({single.step_us:.0f} µs against {sumo_step_us:.0f} µs)",
                    sumo_step_us / single.step_us,
                    1.0,
                )
            )
    return lines


def _versus(mode: str, what: str, value: float, target: float) -> str:
    """One markdown bullet: a ratio ``value`` against ``target`` (higher is better)."""
    verdict = "met" if value >= target else f"**missed by {target / value:.2f}×**"
    return f"- {mode}, {what}: {value:.2f}× (target >= {target:.1f}×): {verdict}"


def write_report(
    rows: list[Row],
    paired: dict[str, Paired],
    path: Path,
    notes: str,
    device: str,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    per_vehicle: PerVehicle | None = None,
) -> None:
    """Write the markdown report: method, machine, table, targets and ``notes``, followed by the
    sections of the page already at ``path`` that this report does not write (hand-written
    provenance, figures from other machines)."""
    text = "\n".join(
        [
            "# Simulator throughput",
            "",
            "Generated by `benchmarks/sim_throughput.py` (`make bench`). Vehicle-steps per second",
            f"over a {STEPS}-step rollout (dt = {DT} s), median of repeats after a warm-up;",
            "forward+backward includes the backward pass of a scalar of the final state to every",
            "step's AV actions and to the initial state. float32, every slot active, one AV per",
            f"world, vehicles {SPACING:.0f} m apart per lane.",
            "",
            f"Machine: {machine_description(device)}. Load average (1 min) {load_before[0]:.2f} "
            f"before the run, {load_after[0]:.2f} after. Commit `{commit()}`.",
            "",
            table(rows),
            "",
            "SUMO (libsumo 1.28, in process, `benchmarks/sumo_speed.py`) is measured in the same "
            "run on the same 4-lane road, spacing and dt, with the exact-IDM vehicle type of "
            "`benchmarks/validate_sumo.py` and no state reads; 'not measured' means SUMO is "
            "not installed (`pip install 'difftraffic[bench]'`) or the road is the ring.",
            "",
            "## Targets",
            "",
            "The ratios to SUMO of the targets alternate our rollouts with SUMO runs of the "
            "same 100 steps on one world of 1000 vehicles, and give the median ratio: a change "
            "of the machine's load between measurements cancels out. The per-vehicle ratios "
            "alternate rollouts of the two world sizes the same way.",
            "",
            *target_lines(rows, paired, per_vehicle),
            "",
            notes,
        ]
    )
    kept = kept_sections(path.read_text() if path.exists() else "", text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "".join(f"\n{section}" for section in kept))


def kept_sections(old_page: str, new_page: str) -> list[str]:
    """The ``## `` sections of ``old_page`` whose headings ``new_page`` does not have, in order,
    each ending in one newline."""
    headings = set(re.findall(r"^## .*$", new_page, re.M))
    sections = re.split(r"^(?=## )", old_page, flags=re.M)[1:]
    return [s.rstrip("\n") + "\n" for s in sections if s.splitlines()[0] not in headings]


def commit() -> str:
    """The checked-out commit, ``+changes`` when the tree differs from it."""

    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return run.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def world_size(text: str) -> tuple[int, int]:
    """Parse ``"BxN"`` (worlds x vehicles per world): whole numbers, ``B >= 1`` and ``N >= 2``."""
    batch, sep, vehicles = text.lower().partition("x")
    if not (
        sep and batch.isdigit() and vehicles.isdigit() and int(batch) > 0 and int(vehicles) > 1
    ):
        raise argparse.ArgumentTypeError(
            f"size {text!r} must look like BxN with worlds B >= 1 and vehicles N >= 2, e.g. 1024x16"
        )
    return int(batch), int(vehicles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, eager only")
    parser.add_argument(
        "--compile",
        choices=["both", "only", "no"],
        default="both",
        help="time torch.compile'd steps as well as eager ones (both), only them, or not",
    )
    parser.add_argument("--device", default="cpu", help="torch device to time on, e.g. cuda")
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=world_size,
        default=None,
        metavar="BxN",
        help=f"world sizes to time (default: {' '.join(f'{b}x{n}' for b, n in SIZES)})",
    )
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")

    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    modes = {"both": ["eager", "compile"], "only": ["compile"], "no": ["eager"]}[args.compile]
    if args.quick:
        modes = modes[:1]
    if args.compile != "only":
        if fused.available(args.device):
            modes.insert(1, "fused")
        else:
            print(f"fused step not timed: {fused.unavailable_reason(args.device)}")
    load_before = os.getloadavg()
    worlds = make_worlds(sizes, args.device)
    rows = benchmark(worlds, modes, budget_s=0.3 if args.quick else 3.0)
    rows = with_sumo(rows)
    paired = {} if args.quick else paired_with_sumo(worlds, modes, PAIRS)
    per_vehicle = {} if args.quick else paired_per_vehicle(worlds, modes, PAIRS)
    print(table(rows))
    print("\n".join(target_lines(rows, paired, per_vehicle)))
    if args.out is not None:
        write_report(
            rows,
            paired,
            args.out,
            NOTES,
            args.device,
            load_before,
            os.getloadavg(),
            per_vehicle,
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
