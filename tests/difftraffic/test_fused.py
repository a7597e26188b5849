"""The fused step (difftraffic.fused) against the eager step, the reference."""

from __future__ import annotations

import math
import shutil
import subprocess

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from difftraffic import fused
from difftraffic.dynamics import step
from difftraffic.idm import IDMParams
from difftraffic.krauss import KraussParams
from difftraffic.lane_change import MOBIL
from difftraffic.neighbors import compute_neighbors, find_leaders
from difftraffic.road import Road
from difftraffic.state import BodyBox, TrafficState
from difftraffic.testing import scenarios

STATE_FIELDS = ("x", "y", "v", "heading")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_the_fused_step_is_built_here():
    # CI has a C compiler: without this, every other test here would quietly test eager twice.
    assert fused.available(), fused.unavailable_reason()


@CUDA
def test_the_cuda_build_is_built_where_a_gpu_is():
    assert fused.available("cuda"), fused.unavailable_reason("cuda")


def _controls(state: TrafficState, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """AVs at +-8 m/s^2 with steering up to 0.3 rad: side and rear-end collisions are common."""
    generator = torch.Generator().manual_seed(seed)
    shape = (steps, *state.x.shape)
    acceleration = 8.0 * (torch.rand(shape, generator=generator) * 2 - 1)
    steering = 0.3 * (torch.rand(shape, generator=generator) * 2 - 1)
    return acceleration.to(state.x.dtype), steering.to(state.x.dtype)


def _assert_steps_agree(eager, fused_result, rtol: float, atol: float, acc_rtol: float) -> None:
    for name in STATE_FIELDS:
        torch.testing.assert_close(
            getattr(fused_result.state, name), getattr(eager.state, name), rtol=rtol, atol=atol
        )
    torch.testing.assert_close(
        fused_result.acceleration, eager.acceleration, rtol=acc_rtol, atol=atol
    )
    assert torch.equal(fused_result.neighbors.leader, eager.neighbors.leader)
    assert torch.equal(fused_result.neighbors.has_leader, eager.neighbors.has_leader)
    assert torch.equal(fused_result.collided, eager.collided)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_step_agrees_with_eager_collisions_rings_and_lane_rules_included(
    dtype, device, to_device
):
    # At centimetre gaps the IDM's (s*/gap)^2 amplifies a one-ulp difference of cos or pow in the
    # gap (float32: 1e-7 relative of a 100 m position) into 1e-4 of the acceleration.
    if dtype == torch.float64:
        tolerance = {"rtol": 1e-12, "atol": 1e-9, "acc_rtol": 1e-9}
    else:
        tolerance = {"rtol": 1e-5, "atol": 1e-4, "acc_rtol": 1e-3}

    @settings(max_examples=20, deadline=None)
    @given(scenarios(max_per_lane=4), st.integers(0, 2**16), st.sampled_from([None, 150.0]))
    def check(scenario, seed, av_speed):
        # Each step starts both paths from the eager state, so a difference cannot hide behind
        # the divergence of chaotic collided trajectories. AVs at 150 m/s pass through cars
        # within a step, changing lanes too (the swept test's crossings).
        state, drivers = scenario.sample(batch_size=3, seed=seed, dtype=dtype)
        if av_speed is not None:
            state = state.replace(v=torch.where(state.is_av, av_speed, state.v))
        acceleration, steering = to_device(device, _controls(state, 40, seed))
        state, drivers = to_device(device, state), to_device(device, drivers)
        neighbors = compute_neighbors(state, scenario.road)
        with torch.no_grad():
            for t in range(40):
                args = (state, scenario.road, drivers, scenario.dt, acceleration[t], steering[t])
                eager = step(*args, neighbors, path="eager")
                fast = step(*args, neighbors._replace(order=None), path="fused")
                _assert_steps_agree(eager, fast, **tolerance)
                state, neighbors = eager.state, eager.neighbors

    check()


def test_a_free_running_rollout_follows_eager_for_300_steps(device, to_device, make_platoons):
    road = Road.straight(num_lanes=3)
    generator = torch.Generator().manual_seed(0)
    batch, n = 8, 30
    state = make_platoons(road, batch, n, 25.0, (10.0, 15.0), generator, unused=2)
    drivers = IDMParams(v0=torch.linspace(20.0, 30.0, n, dtype=torch.float64), T=1.2)
    acceleration = torch.randn(300, batch, n, generator=generator).double()
    steering = 0.01 * torch.randn(300, batch, n, generator=generator).double()
    state, drivers, acceleration, steering = to_device(
        device, (state, drivers, acceleration, steering)
    )
    eager, fast = state, state
    eager_neighbors = fast_neighbors = None
    with torch.no_grad():
        for t in range(300):
            e = step(
                eager,
                road,
                drivers,
                0.1,
                acceleration[t],
                steering[t],
                eager_neighbors,
                path="eager",
            )
            f = step(
                fast, road, drivers, 0.1, acceleration[t], steering[t], fast_neighbors, path="fused"
            )
            eager, eager_neighbors, fast, fast_neighbors = (
                e.state,
                e.neighbors,
                f.state,
                f.neighbors,
            )
            assert torch.equal(f.neighbors.leader, e.neighbors.leader)
    for name in STATE_FIELDS:
        torch.testing.assert_close(getattr(fast, name), getattr(eager, name), rtol=1e-9, atol=1e-9)
    unused = ~state.active
    assert torch.equal(fast.x[unused], state.x[unused]) and torch.equal(
        fast.v[unused], state.v[unused]
    )


@pytest.mark.parametrize("membership", ["body", "center"])
@pytest.mark.parametrize("ring", [False, True])
def test_the_sorted_search_finds_the_eager_leaders_in_large_worlds(
    membership, ring, device, to_device
):
    # 600 vehicles at random lateral positions, many straddling two lanes, some at equal x.
    generator = torch.Generator().manual_seed(1)
    batch, n = 3, 600
    road = Road(4, 3.5, 30.0, 2000.0 if ring else None, membership)
    x = torch.randint(0, 1500, (batch, n), generator=generator).double()
    y = torch.rand(batch, n, generator=generator).double() * road.width
    heading = 0.3 * (torch.rand(batch, n, generator=generator).double() - 0.5)
    state = TrafficState(
        x=x,
        y=y,
        v=torch.zeros(batch, n, dtype=torch.float64),
        heading=heading,
        length=torch.full((batch, n), 5.0, dtype=torch.float64),
        width=torch.full((batch, n), 2.0, dtype=torch.float64),
        is_av=torch.zeros(batch, n, dtype=torch.bool),
        active=torch.rand(batch, n, generator=generator) < 0.9,
    )
    x, state = to_device(device, (x, state))
    box = BodyBox.of_state(state)
    # A stale order (a random permutation) is only a starting point: the result is the same.
    stale = torch.argsort(torch.rand(batch, n, generator=generator), dim=1).to(device)
    leader, has_leader, order = fused.find_leaders(
        x, box.low_y, box.high_y, state.active, road, stale
    )
    expected = compute_neighbors(state, road, method="sorted")
    assert torch.equal(leader, expected.leader) and torch.equal(has_leader, expected.has_leader)
    keys = road.wrap(x).gather(1, order)
    assert (keys[:, 1:] >= keys[:, :-1]).all()


@pytest.mark.parametrize("ring", [False, True])
def test_crossings_in_large_worlds_are_flagged_as_eager_flags_them(ring, device, to_device):
    # 300 cars 8 m apart over 3 lanes, a few at 150 m/s: within a step many fronts pass
    # others in separate places of the world (the fused step only looks inside the stretches of
    # the start order whose end positions are out of order), some of them in shared lanes.
    generator = torch.Generator().manual_seed(2)
    batch, n = 2, 300
    road = Road(3, 3.5, 30.0, 2500.0 if ring else None, "body")
    x = torch.arange(n, dtype=torch.float64).expand(batch, n) * 8.0
    lane = torch.randint(0, 3, (batch, n), generator=generator).double()
    y = (lane + 0.5) * road.lane_width + torch.randn(batch, n, generator=generator).double()
    fast_cars = torch.rand(batch, n, generator=generator) < 0.05
    v = torch.where(fast_cars, 150.0, 10.0).double()
    state = TrafficState(
        x=x.clone(),
        y=y,
        v=v,
        heading=torch.zeros(batch, n, dtype=torch.float64),
        length=torch.full((batch, n), 5.0, dtype=torch.float64),
        width=torch.full((batch, n), 2.0, dtype=torch.float64),
        is_av=fast_cars,
        active=torch.rand(batch, n, generator=generator) < 0.95,
    )
    state = to_device(device, state)
    neighbors = compute_neighbors(state, road)
    acceleration = torch.zeros(batch, n, dtype=torch.float64, device=device)
    args = (state, road, IDMParams(v0=30.0), 0.1, acceleration, acceleration)
    with torch.no_grad():
        eager = step(*args, neighbors, path="eager")
        fast = step(*args, neighbors._replace(order=None), path="fused")
    assert 10 < int(eager.collided.sum()) < batch * n // 2
    assert torch.equal(fast.collided, eager.collided)


def _gradcheck_inputs(
    seed: int, device: str, to_device
) -> tuple[Road, TrafficState, list[torch.Tensor]]:
    """Two worlds of 6 cars on a 2-lane ring, two AVs steering, one unused slot; every float
    field, control and driver parameter a float64 leaf (parameters per car, per world or one)."""
    generator = torch.Generator().manual_seed(seed)
    batch, n = 2, 6

    def uniform(low: float, high: float, shape=(batch, n)) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)

    heading = torch.zeros(batch, n, dtype=torch.float64)
    heading[:, 0], heading[:, 3] = uniform(-0.1, 0.1, (batch,)), 0.1
    is_av = torch.zeros(batch, n, dtype=torch.bool)
    is_av[:, [0, 3]] = True
    active = torch.ones(batch, n, dtype=torch.bool)
    active[1, 5] = False
    state = TrafficState(
        uniform(0.0, 100.0), uniform(0.5, 6.5), uniform(5.0, 15.0), heading,
        uniform(4.0, 5.0), uniform(1.8, 2.0), is_av, active,
    )  # fmt: skip
    leaves = [
        *(getattr(state, name) for name in STATE_FIELDS),
        state.length,
        state.width,
        uniform(-2.0, 2.0),  # AV acceleration
        uniform(-0.2, 0.2),  # AV steering
        uniform(20.0, 30.0, (n,)),  # v0 per car
        torch.tensor(1.2, dtype=torch.float64),  # T
        uniform(1.0, 2.0),  # a per car and world
        torch.tensor(2.0, dtype=torch.float64),  # b
        torch.tensor(4.0, dtype=torch.float64),  # delta
        torch.tensor(2.0, dtype=torch.float64),  # s0
    ]
    state, leaves = to_device(device, (state, leaves))
    return Road(2, 3.5, 30.0, 120.0, "body"), state, [t.requires_grad_(True) for t in leaves]


def _two_steps(road: Road, state: TrafficState, path: str):
    """Two steps from the leaves, returning every differentiable output of both."""

    def run(x, y, v, heading, length, width, acceleration, steering, *parameters):
        drivers = IDMParams(*parameters)
        start = state.replace(x=x, y=y, v=v, heading=heading, length=length, width=width)
        first = step(start, road, drivers, 0.1, acceleration, steering, path=path)
        second = step(
            first.state, road, drivers, 0.1, acceleration, steering, first.neighbors, path=path
        )
        return (*(getattr(second.state, name) for name in STATE_FIELDS), second.acceleration,
                first.acceleration)  # fmt: skip

    return run


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_fused_backward_passes_gradcheck_and_equals_eager(seed, device, to_device):
    road, state, leaves = _gradcheck_inputs(seed, device, to_device)
    assert torch.autograd.gradcheck(_two_steps(road, state, "fused"), leaves)
    eager_outputs = _two_steps(road, state, "eager")(*leaves)
    fused_outputs = _two_steps(road, state, "fused")(*leaves)
    weights = [torch.randn_like(o) for o in eager_outputs]

    def weighted(outputs) -> torch.Tensor:
        return sum((o * w).sum() for o, w in zip(outputs, weights, strict=True))

    eager = torch.autograd.grad(weighted(eager_outputs), leaves)
    fast = torch.autograd.grad(weighted(fused_outputs), leaves)
    for expected, got in zip(eager, fast, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradients_through_collided_rollouts_equal_eager(dtype, device, to_device):
    tolerance = (
        {"rtol": 1e-9, "atol": 1e-9} if dtype == torch.float64 else {"rtol": 1e-3, "atol": 1e-3}
    )

    @settings(max_examples=10, deadline=None)
    @given(scenarios(max_per_lane=3), st.integers(0, 2**16))
    def check(scenario, seed):
        state, drivers = scenario.sample(batch_size=2, seed=seed, dtype=dtype)
        acceleration, steering = to_device(device, _controls(state, 30, seed))
        state, drivers = to_device(device, state), to_device(device, drivers)
        gradients = []
        for path in ("eager", "fused"):
            controls = (acceleration.clone().requires_grad_(True),
                        steering.clone().requires_grad_(True))  # fmt: skip
            start_v = state.v.clone().requires_grad_(True)
            current, neighbors, total = state.replace(v=start_v), None, 0.0
            for t in range(30):
                result = step(current, scenario.road, drivers, scenario.dt, controls[0][t],
                              controls[1][t], neighbors, path=path)  # fmt: skip
                current, neighbors = result.state, result.neighbors
                total = total + current.v.sum() + 0.1 * current.x.sum() + current.heading.sum()
            gradients.append(torch.autograd.grad(total, (*controls, start_v)))
        for expected, got in zip(*gradients, strict=True):
            assert torch.isfinite(got).all()
            torch.testing.assert_close(got, expected, **tolerance)

    check()


def test_auto_runs_fused_with_and_without_gradients(make_state, device):
    state = make_state([0.0, 30.0], [2.0, 2.0], v=[10.0, 5.0], is_av=[True, False])
    state, road, drivers = state.to(device), Road.straight(), IDMParams(v0=20.0)
    acceleration = torch.tensor([[1.0, 0.0]], dtype=torch.float64, device=device)
    acceleration.requires_grad_(True)
    with torch.no_grad():
        fast = step(state, road, drivers, 0.1, acceleration)
    recorded = step(state, road, drivers, 0.1, acceleration)
    # Only the fused step keeps a rank order.
    assert fast.neighbors.order is not None and recorded.neighbors.order is not None
    assert not fast.state.x.requires_grad and recorded.state.x.requires_grad
    torch.testing.assert_close(fast.state.x, recorded.state.x.detach(), rtol=0, atol=0)
    eager = step(state, road, drivers, 0.1, acceleration, path="eager")
    assert eager.neighbors.order is None


@CUDA
def test_auto_leaves_large_cuda_worlds_to_the_eager_step():
    # One GPU thread walks a world: beyond CUDA_AUTO_MAX_VEHICLES the eager step is faster.
    road, drivers = Road.straight(num_lanes=2), IDMParams(v0=20.0)
    for n, expect_fused in ((fused.CUDA_AUTO_MAX_VEHICLES, True),
                            (fused.CUDA_AUTO_MAX_VEHICLES + 1, False)):  # fmt: skip
        x = torch.arange(n, dtype=torch.float64).unsqueeze(0) * 10.0
        state = TrafficState(
            x, (x.long() % 2 + 0.5).double() * road.lane_width, torch.full_like(x, 5.0),
            torch.zeros_like(x), torch.full_like(x, 5.0), torch.full_like(x, 2.0),
            torch.zeros_like(x, dtype=torch.bool), torch.ones_like(x, dtype=torch.bool),
        ).to("cuda")  # fmt: skip
        with torch.no_grad():
            result = step(state, road, drivers, 0.1)
            forced = step(state, road, drivers, 0.1, path="fused")
        assert (result.neighbors.order is not None) is expect_fused  # only fused keeps an order
        assert forced.neighbors.order is not None
        torch.testing.assert_close(result.state.x, forced.state.x, rtol=1e-12, atol=1e-9)


def test_second_derivatives_need_the_eager_path(make_state):
    state = make_state([0.0, 30.0], [2.0, 2.0], v=[10.0, 5.0])
    v = state.v.clone().requires_grad_(True)
    result = step(state.replace(v=v), Road.straight(), IDMParams(v0=20.0), 0.1)
    with pytest.raises(RuntimeError, match="first derivatives only: pass path='eager'"):
        torch.autograd.grad(result.state.x.sum(), v, create_graph=True)
    eager = step(state.replace(v=v), Road.straight(), IDMParams(v0=20.0), 0.1, path="eager")
    (grad,) = torch.autograd.grad(eager.state.v.sum(), v, create_graph=True)
    torch.autograd.grad(grad.sum(), v, allow_unused=True)  # the eager step allows it


def test_controls_of_another_dtype_or_a_broadcast_shape_are_read_safely(make_state):
    # The C pass reads [B, N] buffers of the state's dtype: a float64 [B, 1] control of a
    # float32 state must be broadcast and cast, never read as raw memory.
    state = make_state(
        [[0.0, 30.0, 60.0], [5.0, 40.0, 70.0]], [2.0] * 3, v=[10.0, 5.0, 8.0],
        is_av=[True, False, True], dtype=torch.float32,
    )  # fmt: skip
    control = torch.tensor([[1.5], [-2.0]], dtype=torch.float64)
    road, drivers = Road.straight(), IDMParams(v0=20.0)
    with torch.no_grad():
        fast = step(state, road, drivers, 0.1, control, 0.1 * control, path="fused")
        full = control.float().expand(2, 3)
        eager = step(state, road, drivers, 0.1, full, 0.1 * full, path="eager")
    assert fast.state.x.dtype == torch.float32
    torch.testing.assert_close(fast.state.x, eager.state.x)
    torch.testing.assert_close(fast.state.heading, eager.state.heading)


def test_forcing_the_fused_path_where_it_cannot_run_says_why(make_state):
    state = make_state([0.0, 30.0], [2.0, 2.0], v=[10.0, 5.0])
    road = Road.straight()
    with pytest.raises(ValueError, match="IDM drivers only, got KraussParams"):
        step(state, road, KraussParams(v0=20.0, sigma=0.0), 0.1, path="fused")
    with pytest.raises(ValueError, match="path must be 'auto', 'eager' or 'fused', got 'fast'"):
        step(state, road, IDMParams(v0=20.0), 0.1, path="fast")  # type: ignore[arg-type]


def test_without_a_compiler_auto_stays_eager(make_state, monkeypatch):
    monkeypatch.setattr(fused, "_compiler", lambda: None)
    monkeypatch.setattr(fused, "_build", fused._Build)  # uncached: a fresh, failing build
    assert not fused.available() and "no C compiler" in fused.unavailable_reason()
    state = make_state([0.0, 30.0], [2.0, 2.0], v=[10.0, 5.0])
    with torch.no_grad():
        result = step(state, Road.straight(), IDMParams(v0=20.0), 0.1)
    assert result.neighbors.order is None
    with pytest.raises(ValueError, match="no C compiler"):
        step(state, Road.straight(), IDMParams(v0=20.0), 0.1, path="fused")


def test_a_compiler_without_openmp_builds_the_single_threaded_step(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFTRAFFIC_CACHE", str(tmp_path))
    monkeypatch.setattr(fused, "THREAD_FLAGS", (("-fno-such-option",), ()))
    build = fused._Build()
    assert build.library is not None, build.reason
    assert len(list(tmp_path.glob("*.so"))) == 1
    monkeypatch.setattr(fused, "THREAD_FLAGS", (("-fno-such-option",),))
    failed = fused._Build()
    assert failed.library is None and "-fno-such-option" in failed.reason


def test_the_build_lands_in_the_cache_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFTRAFFIC_CACHE", str(tmp_path))
    build = fused._Build()
    assert build.library is not None, build.reason
    assert [p.suffix for p in tmp_path.iterdir()] == [".so"]
    # The find_leaders shim of the eager module and the fused search agree on a tiny world too.
    x = torch.tensor([[0.0, 10.0, 20.0]])
    occupancy = torch.ones(1, 3, 1, dtype=torch.bool)
    expected = find_leaders(x, occupancy)
    leader, has_leader, _ = fused.find_leaders(
        x,
        torch.full_like(x, 1.0),
        torch.full_like(x, 3.0),
        torch.ones(1, 3, dtype=torch.bool),
        Road.straight(),
        torch.arange(3).unsqueeze(0),
    )
    assert torch.equal(leader, expected.leader) and torch.equal(has_leader, expected.has_leader)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch sees a CUDA device")
def test_without_a_gpu_the_cuda_build_says_why():
    assert not fused.available("cuda")
    assert "sees no CUDA device" in fused.unavailable_reason("cuda")


def test_the_fused_step_names_the_devices_it_runs_on():
    with pytest.raises(ValueError, match=r"device='mps': the fused step runs on 'cpu' or 'cuda'"):
        fused.available("mps")


def test_without_nvcc_the_cuda_build_says_what_to_install(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(fused, "_nvcc", lambda: None)
    build = fused._Build("cuda")
    assert build.library is None and "no CUDA compiler found (put nvcc on PATH" in build.reason


def test_a_failing_nvcc_is_reported_for_each_target_tried(tmp_path, monkeypatch):
    # Machine code for this machine's GPUs first, then nvcc's default target; both failing
    # here, the reason holds both commands and nvcc's own words.
    nvcc = tmp_path / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'nvcc fatal : no GPU here' >&2\nexit 1\n")
    nvcc.chmod(0o755)
    monkeypatch.setenv("CUDACXX", str(nvcc))
    monkeypatch.setenv("DIFFTRAFFIC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    build = fused._Build("cuda")
    assert build.library is None
    attempts = build.reason.removeprefix("building the fused step failed: ").split("; ")
    assert len(attempts) == 2
    assert "-arch=native" in attempts[0] and "-arch" not in attempts[1]
    for attempt in attempts:
        assert "--fmad=false" in attempt and "fused_step.cu" in attempt
        assert "nvcc fatal : no GPU here" in attempt


def test_the_code_shared_with_the_cuda_build_compiles_as_cpp(tmp_path):
    # nvcc compiles fused_step.h as C++: C-only constructs there would break only the GPU build.
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    source = fused.SOURCE_DIR / "fused_step.c"
    command = [compiler, "-x", "c++", "-fsyntax-only", "-Wall", "-Werror"]
    command += ["-Wno-unknown-pragmas", str(source)]
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr


# MOBIL lane changes in the fused step


def _lane_changing_traffic(
    road: Road, batch: int, n: int, seed: int, make_platoons
) -> tuple[TrafficState, IDMParams, MOBIL]:
    """``batch`` worlds of ``n`` cars spread over the lanes 12 m apart (car 0 an AV), desired
    speeds 12-35 m/s, and MOBIL for every human with drawn politeness, keep-right bias and
    duration: many changes, some judged again and dropped."""
    generator = torch.Generator().manual_seed(seed)
    state = make_platoons(road, batch, n, 12.0 * road.num_lanes, (8.0, 16.0), generator, unused=1)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, n, generator=generator, dtype=torch.float64)

    drivers = IDMParams(v0=uniform(12.0, 35.0), T=uniform(0.8, 1.6), s0=2.0)
    lane_changes = MOBIL(
        politeness=uniform(0.0, 0.6),
        threshold=0.1,
        b_safe=uniform(2.0, 5.0),
        keep_right=uniform(-0.1, 0.3),
        duration=uniform(1.0, 3.0),
    )
    return state, drivers, lane_changes


def _starts_and_ends(states: list[TrafficState]) -> tuple[int, int]:
    """How many lane changes start and end over consecutive states (headings leave and reach 0)."""
    starts = ends = 0
    for before, after in zip(states, states[1:], strict=False):
        human = ~after.is_av
        starts += int((human & (before.heading == 0) & (after.heading != 0)).sum())
        ends += int((human & (before.heading != 0) & (after.heading == 0)).sum())
    return starts, ends


@pytest.mark.parametrize("membership", ["body", "center"])
@pytest.mark.parametrize("ring", [False, True])
def test_lane_changes_in_a_free_running_rollout_follow_eager(
    ring, membership, device, to_device, make_platoons
):
    road = Road(3, 4.0, 30.0, 600.0 if ring else None, membership)
    state, drivers, lane_changes = _lane_changing_traffic(road, 6, 40, 1, make_platoons)
    steering = 0.02 * torch.randn(300, 6, 40, generator=torch.Generator().manual_seed(2))
    state, drivers, steering = to_device(device, (state, drivers, steering.double()))
    lane_changes = lane_changes.to(state.x)
    runs = {}
    with torch.no_grad():
        for path in ("eager", "fused"):
            current, neighbors, states, events = state, None, [state], []
            for t in range(300):
                result = step(current, road, drivers, 0.1, None, steering[t], neighbors,
                              path=path, lane_changes=lane_changes)  # fmt: skip
                current, neighbors = result.state, result.neighbors
                states.append(current)
                events.append((result.neighbors.leader, result.collided))
            runs[path] = states, events
    (eager, eager_events), (fast, fast_events) = runs["eager"], runs["fused"]
    for t, (e, f) in enumerate(zip(eager_events, fast_events, strict=True)):
        assert torch.equal(f[0], e[0]) and torch.equal(f[1], e[1]), f"step {t}"
    for name in STATE_FIELDS:
        torch.testing.assert_close(
            getattr(fast[-1], name), getattr(eager[-1], name), rtol=1e-9, atol=1e-9
        )
    starts, ends = _starts_and_ends(fast)
    assert starts > 20 and ends > 20  # the rollout is full of lane changes


def test_every_step_with_lane_changes_agrees_with_eager_in_float32(
    device, to_device, make_platoons
):
    # Each step starts both paths from the eager state: float32 trajectories diverge by rounding.
    road = Road.straight(num_lanes=3)
    state, drivers, lane_changes = _lane_changing_traffic(road, 4, 30, 3, make_platoons)
    state, drivers = to_device(device, (state.to(dtype=torch.float32), drivers))
    drivers = drivers.to(state.x)
    lane_changes = lane_changes.to(state.x)
    neighbors, started = None, 0
    with torch.no_grad():
        for _ in range(150):
            args = (state, road, drivers, 0.1, None, None)
            eager = step(*args, neighbors, path="eager", lane_changes=lane_changes)
            fast = step(*args, neighbors, path="fused", lane_changes=lane_changes)
            _assert_steps_agree(eager, fast, rtol=1e-5, atol=1e-4, acc_rtol=1e-3)
            started += int(((state.heading == 0) & (eager.state.heading != 0)).sum())
            state, neighbors = eager.state, eager.neighbors
    assert started > 10


def test_gradients_through_lane_changes_equal_eager(device, to_device, make_platoons):
    road = Road.straight(num_lanes=3)
    state, drivers, lane_changes = _lane_changing_traffic(road, 3, 24, 4, make_platoons)
    state, drivers = to_device(device, (state, drivers))
    lane_changes = lane_changes.to(state.x)
    steering = torch.full_like(state.x, 0.01)
    gradients, runs = [], []
    for path in ("eager", "fused"):
        leaves = [state.x.clone(), state.y.clone(), state.v.clone(), drivers.v0.clone()]
        leaves = [t.requires_grad_(True) for t in leaves]
        current = state.replace(x=leaves[0], y=leaves[1], v=leaves[2])
        own = IDMParams(v0=leaves[3], T=drivers.T, s0=drivers.s0)
        neighbors, states, total = None, [current], 0.0
        for _ in range(60):
            result = step(current, road, own, 0.1, None, steering, neighbors, path=path,
                          lane_changes=lane_changes)  # fmt: skip
            current, neighbors = result.state, result.neighbors
            states.append(current)
            total = total + current.x.sum() + 3.0 * current.y.sum() + current.heading.sum()
        gradients.append(torch.autograd.grad(total, leaves))
        runs.append(states)
    starts, ends = _starts_and_ends(runs[1])
    assert starts > 5 and ends > 2  # changes start and end inside the window
    for expected, got in zip(*gradients, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def _a_start_and_an_end(device: str, make_state) -> tuple[Road, TrafficState, IDMParams]:
    """Two lanes: car 0 closes on a slow car 1 with lane 1 free beside them (car 0 starts a
    change where car 1 keeps its lane); car 2 is moving into lane 1, 5 cm short of its centre
    (its change ends in the step)."""
    road = Road.straight(2, 4.0, 30.0)
    state = make_state([0.0, 25.0, 200.0], [2.0, 2.0, 5.95], v=[20.0, 8.0, 15.0],
                       heading=[0.0, 0.0, 0.1])  # fmt: skip
    drivers = IDMParams(v0=torch.tensor([[30.0, 8.0, 20.0]], dtype=torch.float64, device=device))
    return road, state.to(device), drivers


def test_the_fused_backward_through_a_change_that_starts_and_one_that_ends_passes_gradcheck(
    device, make_state
):
    road, state, drivers = _a_start_and_an_end(device, make_state)
    enabled = torch.tensor([[True, False, True]], device=device)  # car 1 would move politely
    lane_changes = MOBIL(duration=2.0, enabled=enabled).to(state.x)
    first = step(state, road, drivers, 0.1, path="fused", lane_changes=lane_changes)
    assert float(first.state.heading[0, 0]) > 0  # car 0 started to move left
    assert float(first.state.heading[0, 2]) == 0.0  # car 2 arrived ...
    assert float(first.state.y[0, 2]) == road.lane_center(1)  # ... on the centre

    # Cars 0 and 1 sit on their lane's centre, where the target of a change starting there
    # jumps (the next centre beyond y): only car 2's y is perturbed.
    moves = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64, device=device)

    def two_steps(path: str):
        def run(x, y_shift, v, v0):
            start = state.replace(x=x, y=state.y + moves * y_shift, v=v)
            own = IDMParams(v0=v0)
            one = step(start, road, own, 0.1, path=path, lane_changes=lane_changes)
            two = step(one.state, road, own, 0.1, None, None, one.neighbors, path=path,
                       lane_changes=lane_changes)  # fmt: skip
            return two.state.x, two.state.y, two.state.v, two.state.heading, one.state.y

        return run

    shift = torch.zeros_like(state.y)
    leaves = [t.clone().requires_grad_(True) for t in (state.x, shift, state.v, drivers.v0)]
    # The angle of a change is computed from the detached speed (a constant, as on the eager
    # path), so the finite differences of gradcheck leave the speeds out.
    fused_run = two_steps("fused")
    assert torch.autograd.gradcheck(
        lambda x, y, v0: fused_run(x, y, state.v, v0), leaves[:2] + [leaves[3]]
    )
    eager, fast = two_steps("eager")(*leaves), two_steps("fused")(*leaves)
    for e, f in zip(eager, fast, strict=True):
        torch.testing.assert_close(f, e, rtol=0, atol=1e-12)
    # what flows: the ended change's y is a constant, the started one's y moves with its speed
    (dy_end,) = torch.autograd.grad(fast[4][0, 2], leaves[2], retain_graph=True)
    (dy_start,) = torch.autograd.grad(fast[4][0, 0], leaves[2])
    assert float(dy_end.abs().sum()) == 0.0
    assert float(dy_start[0, 0]) > 0.0


def test_lane_changes_on_a_road_with_lane_ends_stay_eager(device, make_state):
    road, state, drivers = _a_start_and_an_end(device, make_state)
    ending = Road(2, 4.0, 30.0, lane_ends=(500.0, math.inf))
    lane_changes = MOBIL().to(state.x)
    with pytest.raises(ValueError, match="roads with lane ends run on the eager step"):
        step(state, ending, drivers, 0.1, path="fused", lane_changes=lane_changes)
    auto = step(state, ending, drivers, 0.1, lane_changes=lane_changes)
    eager = step(state, ending, drivers, 0.1, path="eager", lane_changes=lane_changes)
    assert torch.equal(auto.state.y, eager.state.y)
    fused_road = step(state, road, drivers, 0.1, path="fused", lane_changes=lane_changes)
    assert torch.equal(fused_road.neighbors.leader, eager.neighbors.leader)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lane_width", [3.5, 3.6, 3.7, 3.75, 3.8, 4.0])
def test_a_change_from_a_lane_centre_heads_for_the_next_lane_on_both_paths(
    lane_width, dtype, device, make_state
):
    # y / w - 0.5 of a car on a centre rounds below or above the integer for some widths: the
    # change must still target the next lane, not end at once on its own centre.
    road = Road(3, lane_width, 30.0)
    centre = road.lane_center(1)
    state = make_state([0.0, 200.0], [centre, centre], v=20.0, dtype=dtype).to(device)
    y = state.y
    drivers = IDMParams(v0=20.0)
    for keep_right, side in ((1.0, -1.0), (-1.0, 1.0)):  # a bias to the right, then to the left
        lane_changes = MOBIL(keep_right=keep_right).to(state.x)
        for path in ("eager", "fused"):
            result = step(state, road, drivers, 0.1, path=path, lane_changes=lane_changes)
            assert torch.all(torch.sign(result.state.heading) == side), (path, keep_right)
            assert torch.all(side * (result.state.y - y) > 0)


def test_a_stopped_car_starting_a_change_in_3_5_m_lanes_finds_the_eager_leaders(device, make_state):
    # Its steepest turn puts its rear corner on the lane line: the angle must round as torch's.
    road = Road(4, 3.5, 30.0)
    state = make_state([50.0, 56.5, 54.0], [8.75, 8.75, 5.25]).to(device)
    enabled = torch.tensor([[True, False, False]], device=device)
    lane_changes = MOBIL(enabled=enabled).to(state.x)
    runs = [
        step(state, road, IDMParams(v0=30.0), 0.1, path=path, lane_changes=lane_changes)
        for path in ("eager", "fused")
    ]
    assert float(runs[0].state.heading[0, 0]) != 0.0  # car 0 starts to move
    _assert_steps_agree(*runs, rtol=0, atol=1e-12, acc_rtol=0)


def test_lane_changes_run_under_inference_mode_on_both_paths(device, make_state):
    road, state, drivers = _a_start_and_an_end(device, make_state)
    with torch.inference_mode():
        lane_changes = MOBIL(duration=2.0).to(state.x)  # inference tensors
        eager = step(state, road, drivers, 0.1, path="eager", lane_changes=lane_changes)
        fast = step(state, road, drivers, 0.1, path="fused", lane_changes=lane_changes)
        again = step(state, road, drivers, 0.1, path="fused", lane_changes=lane_changes)
    _assert_steps_agree(eager, fast, rtol=0, atol=1e-12, acc_rtol=0)
    assert torch.equal(again.state.y, fast.state.y)
