"""The fused step: one compiled pass per world for a whole :func:`difftraffic.step`.

The eager step runs about 160 tensor operations, each a pass over ``[B, N]`` (or ``[B, N, N]``)
memory plus 1-2 µs of dispatch (5-10 µs of kernel launch on a GPU); the fused step is one call
into ``_native/fused_step.h``, which for each world computes the IDM, the bicycle model and the
integration vehicle by vehicle, then the new leaders from the vehicles sorted by
``(x, index)`` (an order kept across steps in :attr:`difftraffic.Neighbors.order` and repaired by
insertion sort, ``O(N L)`` per world rather than the pairwise ``O(N^2)`` table), then the
collision tests. On the CPU the worlds are shared among threads (``fused_step.c``, OpenMP); on
CUDA each world is one GPU thread (``fused_step.cu``). It follows the eager step formula by
formula, so the two agree to the rounding of the maths library's ``cos``, ``sin``, ``tan`` and
``pow`` (tested on each device: values, leaders and collisions).

Its backward pass is hand-written (``step_world_backward``, one pass per world in reverse): the
vector-Jacobian product of the step with the leader relations held fixed, which is what autograd
computes through the eager step (the leader search and collision test carry no gradient there
either), with torch's conventions at the kinks of ``relu``, ``clamp_min`` and ``abs``. Tested
with float64 ``gradcheck`` and against eager gradients through collided rollouts. It gives first
derivatives only: a second derivative (``create_graph=True``) raises and asks for
``path="eager"``, as do ``torch.func`` transforms.

With MOBIL lane changes (``step(..., lane_changes=...)``) the same pass first takes every human
driver's decision (``mobil_world``: MOBIL's incentive and safety criterion on the lane
neighbours of a sorted sweep, judged a second time as if decided one after another, as
:func:`difftraffic.lane_change.mobil_directions` does), then moves it laterally and ends its
change on the target lane's centre; the backward pass holds a change's start angle and its end
on the centre constant, as autograd does through the eager step.

:func:`difftraffic.step` uses it (``path="auto"``) for IDM drivers outside ``torch.compile``, on
the CPU and on CUDA for worlds of up to :data:`CUDA_AUTO_MAX_VEHICLES` slots, and the eager step
otherwise. It is built on first use per kind of device into ``$DIFFTRAFFIC_CACHE`` (default
``~/.cache/difftraffic``): for the CPU with the system C compiler (``cc``, or ``$CC``; about a
second; with OpenMP where the compiler has it, else single-threaded), for CUDA with ``nvcc``
(``$CUDACXX``, the ``PATH`` or ``$CUDA_HOME/bin``; a few seconds; machine code for this
machine's GPUs). Without a compiler ``path="auto"`` stays eager and :func:`unavailable_reason`
says why.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sysconfig
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from difftraffic.idm import IDMParams
from difftraffic.lane_change import MOBIL
from difftraffic.neighbors import Neighbors
from difftraffic.road import Road
from difftraffic.state import BodyBox, TrafficState

SOURCE_DIR = Path(__file__).parent / "_native"
SOURCES = ("fused_step.h", "both_precisions.h", "drivers_openmp.h", "drivers_cuda.cuh")
FLAGS = ("-O3", "-ffp-contract=off", "-fPIC", "-shared")
"""``-ffp-contract=off``: no fused multiply-adds, so every operation rounds as torch's do."""
THREAD_FLAGS = (("-fopenmp",), ())
"""Tried in order: worlds shared among threads with OpenMP, else one thread (Apple's clang has no
``-fopenmp``)."""
CUDA_FLAGS = ("-O3", "--fmad=false", "-Xcompiler", "-fPIC", "-shared")
"""``--fmad=false``: as ``-ffp-contract=off`` for the C build."""
ARCH_FLAGS = (("-arch=native",), ())
"""Tried in order: machine code for the GPUs of this machine, else nvcc's default target (PTX
that the driver compiles when the library loads)."""

CUDA_AUTO_MAX_VEHICLES = 200
"""On CUDA, ``path="auto"`` takes the fused step for worlds of up to this many vehicle slots and
the eager step beyond. One GPU thread walks a world, so a few large worlds leave most of the GPU
idle while the eager step spreads every vehicle over its threads. Measured on an H200
(docs/benchmarks.md): the fused step is 2.5-14x the eager one's rate at 16 to 100 vehicles a
world, about even at 250, and 1.5-4x behind from 250 to 1000."""

_PARAMETERS = ("v0", "T", "a", "b", "delta", "s0")
_FLOAT_FIELDS = ("x", "y", "v", "heading", "length", "width")


def _cache_dir() -> Path:
    root = os.environ.get("DIFFTRAFFIC_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "difftraffic"


def _compiler() -> str | None:
    for candidate in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc"):
        if candidate and shutil.which(candidate.split()[0]):
            return candidate
    return None


def _nvcc() -> str | None:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    for candidate in (os.environ.get("CUDACXX"), "nvcc", str(Path(cuda_home) / "bin" / "nvcc")):
        if candidate and shutil.which(candidate.split()[0]):
            return candidate
    return None


@dataclass(frozen=True)
class _Toolchain:
    """How to build the fused step for one kind of device."""

    source: str
    find_compiler: Callable[[], str | None]
    missing: str
    flag_sets: Callable[[], list[tuple[str, ...]]]
    link: tuple[str, ...]


_TOOLCHAINS = {
    "cpu": _Toolchain(
        "fused_step.c",
        lambda: _compiler(),
        "no C compiler found (set CC)",
        lambda: [(*FLAGS, *threads) for threads in THREAD_FLAGS],
        ("-lm",),
    ),
    "cuda": _Toolchain(
        "fused_step.cu",
        lambda: _nvcc(),
        "no CUDA compiler found (put nvcc on PATH, or set CUDACXX or CUDA_HOME)",
        lambda: [(*CUDA_FLAGS, *arch) for arch in ARCH_FLAGS],
        (),
    ),
}


class _Build:
    """The loaded library for a kind of device (``"cpu"`` or ``"cuda"``), or why there is
    none."""

    def __init__(self, kind: str = "cpu") -> None:
        self.library: ctypes.CDLL | None = None
        self.reason = ""
        toolchain = _TOOLCHAINS[kind]
        if kind == "cuda" and not torch.cuda.is_available():
            self.reason = f"this torch ({torch.__version__}) sees no CUDA device"
            return
        compiler = toolchain.find_compiler()
        if compiler is None:
            self.reason = toolchain.missing
            return
        failures = []
        for flags in toolchain.flag_sets():
            digest = hashlib.sha256(" ".join((compiler, *flags)).encode())
            for name in (toolchain.source, *SOURCES):
                digest.update((SOURCE_DIR / name).read_bytes())
            target = _cache_dir() / f"{Path(toolchain.source).stem}-{digest.hexdigest()[:16]}.so"
            try:
                if not target.exists():
                    _compile([*compiler.split(), *flags], toolchain, target)
                self.library = _load(target, kind)
                return
            except subprocess.CalledProcessError as error:
                failures.append(f"{' '.join(error.cmd)}: {error.stderr.strip()[-300:]}")
            except OSError as error:
                failures.append(f"{target}: {error}")
        self.reason = "building the fused step failed: " + "; ".join(failures)


def _compile(command: list[str], toolchain: _Toolchain, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: concurrent processes never load a half-written file.
    handle, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    command = [*command, "-o", partial, str(SOURCE_DIR / toolchain.source), *toolchain.link]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _load(target: Path, kind: str) -> ctypes.CDLL:
    library = ctypes.CDLL(str(target))
    if kind == "cuda":
        library.difftraffic_cuda_error.restype = ctypes.c_char_p
        for suffix in ("_f32", "_f64"):
            scratch_bytes = getattr(library, "difftraffic_scratch_bytes" + suffix)
            scratch_bytes.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_int]
            scratch_bytes.restype = ctypes.c_int64
    return library


@cache
def _build(kind: str = "cpu") -> _Build:
    return _Build(kind)


def _kind(device: str | torch.device) -> str:
    if isinstance(device, str) and device in _TOOLCHAINS:  # step() asks every step: no parsing
        return device
    kind = torch.device(device).type
    if kind not in _TOOLCHAINS:
        raise ValueError(f"device={str(device)!r}: the fused step runs on 'cpu' or 'cuda'")
    return kind


def available(device: str | torch.device = "cpu") -> bool:
    """Whether the fused step is built for ``device``'s kind (building it on first call)."""
    return _build(_kind(device)).library is not None


def unavailable_reason(device: str | torch.device = "cpu") -> str:
    """Why :func:`available` is False for ``device`` ('' when it is True)."""
    return _build(_kind(device)).reason


def eager_is_faster(x: Tensor) -> bool:
    """Whether ``path="auto"`` leaves worlds like ``x`` (``[B, N]``) to the eager step though the
    fused one could run them: CUDA worlds of more than :data:`CUDA_AUTO_MAX_VEHICLES`."""
    return x.is_cuda and x.shape[1] > CUDA_AUTO_MAX_VEHICLES


def _real(dtype: torch.dtype) -> type[ctypes.c_float] | type[ctypes.c_double]:
    return ctypes.c_float if dtype == torch.float32 else ctypes.c_double


class _Structs(NamedTuple):
    param: type[ctypes.Structure]
    mobil: type[ctypes.Structure]
    step: type[ctypes.Structure]


@cache
def _structs(dtype: torch.dtype) -> _Structs:
    """The C ``Param``, ``Mobil`` and ``Step`` structures for ``dtype`` (field order as in the
    header)."""
    real = _real(dtype)
    pointer, i64, integer = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int

    class Param(ctypes.Structure):
        _fields_ = [("ptr", pointer), ("stride_b", i64), ("stride_n", i64), ("value", real)]

    class Mobil(ctypes.Structure):
        _fields_ = [("on", integer)] + [(name, Param) for name in MOBIL.PARAMETERS]
        _fields_ += [("enabled", pointer), ("enabled_stride_b", i64), ("enabled_stride_n", i64)]
        _fields_ += [("started", pointer), ("arrived", pointer)]

    names: tuple[str, ...] = ("lane_width", "ring_length", "dt", "wheelbase_ratio", "min_gap")
    arrays: tuple[str, ...] = ("x", "y", "v", "heading", "length", "width", "is_av", "active")
    arrays += ("av_acceleration", "av_steering")
    outputs: tuple[str, ...] = ("x_next", "y_next", "v_next", "heading_next", "acceleration")
    outputs += ("leader_next", "order", "has_leader_next", "collided")

    class Step(ctypes.Structure):
        _fields_ = [(name, i64) for name in ("B", "N", "L")]
        _fields_ += [(name, real) for name in names]
        _fields_ += [("ring", integer), ("center", integer)]
        _fields_ += [(name, pointer) for name in arrays]
        _fields_ += [(name, Param) for name in _PARAMETERS]
        _fields_ += [("leader", pointer), ("has_leader", pointer), ("order_start", pointer)]
        _fields_ += [(name, pointer) for name in outputs]
        _fields_ += [("mobil", Mobil)]

    return _Structs(Param, Mobil, Step)


@cache
def _leaders_struct(dtype: torch.dtype) -> type[ctypes.Structure]:
    """The C ``Leaders`` structure for ``dtype``: a leader search of a state, no step."""
    pointer, i64, integer = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int

    class Leaders(ctypes.Structure):
        _fields_ = [(name, i64) for name in ("B", "N", "L")]
        _fields_ += [("lane_width", _real(dtype)), ("center", integer), ("ring", integer)]
        _fields_ += [(name, pointer) for name in ("x", "low_y", "high_y", "active", "order")]
        _fields_ += [("leader", pointer), ("has_leader", pointer)]

    return Leaders


@cache
def _grads_struct() -> type[ctypes.Structure]:
    """The C ``Grads`` structure: pointers to the outputs' gradients, then the inputs'."""
    names = ["d_" + name + "_next" for name in (*_FLOAT_FIELDS[:4], "acceleration")]
    names += ["d_" + name for name in (*_FLOAT_FIELDS, "av_acceleration", "av_steering")]
    names += ["d_" + name for name in _PARAMETERS]

    class Grads(ctypes.Structure):
        _fields_ = [(name, ctypes.c_void_p) for name in names]

    return Grads


def _suffix(dtype: torch.dtype) -> str:
    return "_f32" if dtype == torch.float32 else "_f64"


def _library(kind: str) -> ctypes.CDLL:
    library = _build(kind).library
    if library is None:
        raise RuntimeError(f"the fused step is unavailable: {unavailable_reason(kind)}")
    return library


def _launch(name: str, like: Tensor, lanes: int, *specs: Any, mobil: bool = False) -> None:
    """Run the pass ``name`` (``difftraffic_step``, ``..._backward`` or ``..._leaders``) over the
    worlds of ``like`` (``[B, N]``, its dtype and device): on the CPU over the intra-op threads;
    on CUDA with a scratch buffer of torch's allocator (larger for a step with ``mobil`` lane
    changes), on the current stream."""
    suffix = _suffix(like.dtype)
    batch, n = like.shape
    arguments = [ctypes.byref(spec) for spec in specs]
    if like.is_cpu:
        function = getattr(_library("cpu"), name + suffix)
        function(*arguments, ctypes.c_int(_threads(batch)))
        return
    library = _library("cuda")
    size = getattr(library, "difftraffic_scratch_bytes" + suffix)(batch, n, lanes, int(mobil))
    # Freed when this returns; torch's allocator hands the memory out again only to work queued
    # after this pass on the same stream.
    scratch = torch.empty(size, dtype=torch.uint8, device=like.device)
    with torch.cuda.device(like.device):
        stream = torch.cuda.current_stream(like.device).cuda_stream
        function = getattr(library, name + suffix)
        code = function(*arguments, ctypes.c_void_p(scratch.data_ptr()), ctypes.c_void_p(stream))
    if code:
        message = library.difftraffic_cuda_error(code).decode()
        raise RuntimeError(f"the fused step's CUDA pass {name} failed to launch: {message}")


def _param(param_type: type[ctypes.Structure], value: Any, like: Tensor, keep: list[Tensor]) -> Any:
    """A driver parameter as the C ``Param``: a scalar, or a tensor broadcast to ``[B, N]``."""
    if not isinstance(value, Tensor):
        return param_type(None, 0, 0, float(value))
    if value.numel() == 1 and value.is_cpu:  # item() of a GPU tensor would wait for the GPU
        return param_type(None, 0, 0, value.item())
    expanded = value.detach().to(like.dtype).expand(like.shape)
    keep.append(expanded)
    return param_type(expanded.data_ptr(), expanded.stride(0), expanded.stride(1), 0.0)


def _threads(batch: int) -> int:
    return min(torch.get_num_threads(), batch)


def initial_order(x: Tensor, road: Road) -> Tensor:
    """``[B, N]`` long: each world's vehicles sorted by ``(x, index)``, the fused search's order."""
    return torch.argsort(road.wrap(x.detach()), dim=1, stable=True)


def find_leaders(
    x: Tensor, low_y: Tensor, high_y: Tensor, active: Tensor, road: Road, order: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Leaders of one state by the fused search: ``(leader, has_leader, order)``, each ``[B, N]``.

    ``x`` front bumpers (m), ``low_y``/``high_y`` lateral body extents (m), ``order`` a rank
    order to start from (copied, not changed).
    """
    batch, n = x.shape
    x = road.wrap(x.detach()).contiguous()
    order = order.clone(memory_format=torch.contiguous_format)
    leader = torch.empty_like(order)
    has_leader = torch.empty_like(active)
    low_y, high_y = low_y.detach().contiguous(), high_y.detach().contiguous()
    active = active.contiguous()
    spec = _leaders_struct(x.dtype)(
        batch,
        n,
        road.num_lanes,
        road.lane_width,
        int(road.lane_membership == "center"),
        int(road.is_ring),
        *(t.data_ptr() for t in (x, low_y, high_y, active, order, leader, has_leader)),
    )
    _launch("difftraffic_leaders", x, road.num_lanes, spec)
    return leader, has_leader, order


@dataclass(frozen=True)
class _Frame:
    """What a step holds fixed: the road, the time step and the discrete state."""

    road: Road
    dt: float
    wheelbase_ratio: float
    min_gap: float
    is_av: Tensor
    active: Tensor
    leader: Tensor
    has_leader: Tensor
    order: Tensor
    mobil: Any = None
    """The C ``Mobil`` of a step with lane changes (:func:`_mobil_spec`), or ``None``."""
    buffers: tuple[Tensor, ...] = ()
    """What ``mobil`` points to, kept alive for the backward pass."""

    def spec(self, inputs: list[Tensor], params: list[Any], outputs: list[Tensor]) -> Any:
        """The C ``Step`` for ``inputs`` (x, y, v, heading, length, width, AV acceleration,
        AV steering), driver ``params`` (C ``Param``) and ``outputs`` (nine tensors, or none)."""
        step_type = _structs(inputs[0].dtype).step
        batch, n = inputs[0].shape
        road = self.road
        arrays = [*inputs[:6], self.is_av, self.active, *inputs[6:]]
        spec = step_type(
            batch,
            n,
            road.num_lanes,
            road.lane_width,
            road.ring_length if road.ring_length is not None else 0.0,
            self.dt,
            self.wheelbase_ratio,
            self.min_gap,
            int(road.is_ring),
            int(road.lane_membership == "center"),
            *(t.data_ptr() for t in arrays),
            *params,
            self.leader.data_ptr(),
            self.has_leader.data_ptr(),
            self.order.data_ptr(),
            *(t.data_ptr() for t in outputs),
        )
        if self.mobil is not None:
            spec.mobil = self.mobil
        return spec


def _mobil_spec(params: MOBIL, like: Tensor) -> tuple[Any, tuple[Tensor, ...]]:
    """The C ``Mobil`` of lane changes ``params`` in worlds like ``like`` (``[B, N]``) and the
    tensors it points to: the parameters, ``enabled``, and the ``[B, N]`` buffers where the step
    notes the changes it starts (int8) and ends (uint8) for its backward pass."""
    spec_type, values, keep = _mobil_parameters(params, like)
    started = torch.empty(like.shape, dtype=torch.int8, device=like.device)
    arrived = torch.empty(like.shape, dtype=torch.uint8, device=like.device)
    spec = spec_type(1, *values, started.data_ptr(), arrived.data_ptr())
    return spec, (*keep, started, arrived)


_MOBIL_CACHE: dict[tuple[Any, ...], tuple[MOBIL, Any, list[Any], tuple[Tensor, ...]]] = {}
"""The C parameters of the last few MOBIL objects used, by identity, the versions of their
tensors and the worlds' shape (each entry holds its MOBIL, so no other object takes its id while
it is cached)."""


def _mobil_parameters(params: MOBIL, like: Tensor) -> tuple[Any, list[Any], tuple[Tensor, ...]]:
    """``(Mobil type, its parameter fields and enabled's pointer and strides, tensors to keep)``
    for ``params`` in worlds like ``like``: built once per MOBIL object, shape, dtype and device
    (a simulation passes the same object every step)."""
    tensors = [v for v in params.tensors().values() if isinstance(v, Tensor)]
    # _version notes in-place edits; inference tensors keep none, so they are not cached
    cacheable = not any(t.is_inference() for t in tensors)
    versions = tuple(t._version for t in tensors) if cacheable else ()
    key = (id(params), versions, like.shape, like.dtype, like.device)
    cached = _MOBIL_CACHE.get(key) if cacheable else None
    if cached is not None and cached[0] is params:
        return cached[1:]
    structs = _structs(like.dtype)
    keep: list[Tensor] = []
    values = [_param(structs.param, getattr(params, name), like, keep) for name in MOBIL.PARAMETERS]
    enabled = torch.as_tensor(params.enabled, dtype=torch.bool, device=like.device)
    enabled = enabled.expand(like.shape)
    values += [enabled.data_ptr(), enabled.stride(0), enabled.stride(1)]
    if cacheable:
        if len(_MOBIL_CACHE) >= 8:
            _MOBIL_CACHE.pop(next(iter(_MOBIL_CACHE)))
        _MOBIL_CACHE[key] = (params, structs.mobil, values, (*keep, enabled))
    return structs.mobil, values, (*keep, enabled)


def _c_params(values: tuple[Any, ...], like: Tensor, keep: list[Tensor]) -> list[Any]:
    param_type = _structs(like.dtype).param
    return [_param(param_type, value, like, keep) for value in values]


def _forward(frame: _Frame, inputs: list[Tensor], params: tuple[Any, ...]) -> list[Tensor]:
    """The C forward step: ``[x, y, v, heading, acceleration, leader, order, has_leader,
    collided]`` at ``t + dt``."""
    x = inputs[0]
    keep: list[Tensor] = []
    c_params = _c_params(params, x, keep)
    outputs = [torch.empty_like(x) for _ in range(5)]
    outputs += [torch.empty_like(frame.leader), torch.empty_like(frame.order)]
    outputs += [torch.empty_like(frame.has_leader), torch.empty_like(frame.has_leader)]
    spec = frame.spec(inputs, c_params, outputs)
    _launch("difftraffic_step", x, frame.road.num_lanes, spec, mobil=frame.mobil is not None)
    return outputs


class _Step(torch.autograd.Function):
    """The fused step with its hand-written vector-Jacobian product (``step_world_backward``)."""

    @staticmethod
    def forward(ctx: Any, frame: _Frame, *inputs_and_params: Any) -> tuple[Tensor, ...]:
        inputs = [t.detach().contiguous() for t in inputs_and_params[:8]]
        params = inputs_and_params[8:]
        outputs = _forward(frame, inputs, params)
        ctx.frame = frame
        ctx.param_is_tensor = [isinstance(p, Tensor) for p in params]
        ctx.floats = [None if isinstance(p, Tensor) else p for p in params]
        ctx.save_for_backward(*inputs, *(p for p in params if isinstance(p, Tensor)))
        ctx.mark_non_differentiable(*outputs[5:])
        return tuple(outputs)

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():  # create_graph=True: a second derivative is wanted
            raise RuntimeError(
                "the fused step has first derivatives only: pass path='eager' to "
                "difftraffic.step for higher-order gradients"
            )
        saved = list(ctx.saved_tensors)
        inputs, tensor_params = saved[:8], iter(saved[8:])
        params = [
            next(tensor_params) if is_tensor else value
            for is_tensor, value in zip(ctx.param_is_tensor, ctx.floats, strict=True)
        ]
        x = inputs[0]
        keep: list[Tensor] = []
        c_params = _c_params(tuple(params), x, keep)
        upstream = [g.contiguous() for g in grad_outputs[:5]]
        wanted = ctx.needs_input_grad[1:]
        grads = [torch.zeros_like(x) if want else None for want in wanted]
        grads_type = _grads_struct()
        spec = ctx.frame.spec(inputs, c_params, [])
        pointers = [t.data_ptr() for t in upstream] + [
            0 if t is None else t.data_ptr() for t in grads
        ]
        grad_spec = grads_type(*pointers)
        _launch("difftraffic_step_backward", x, ctx.frame.road.num_lanes, spec, grad_spec)
        param_grads = [
            None if grad is None else grad.sum_to_size(param.shape)
            for grad, param in zip(grads[8:], params, strict=True)
        ]
        return (None, *grads[:8], *param_grads)


def _control_buffer(control: Tensor | None, x: Tensor) -> Tensor:
    """An AV control as the ``[B, N]`` buffer of ``x``'s dtype that the C pass reads (zeros for
    ``None``). The cast is differentiable; the eager step would promote the state instead, and
    :func:`difftraffic.validate_step_inputs` rejects either mismatch. Each conversion is skipped
    when not needed: this runs every step."""
    if control is None:
        return torch.zeros_like(x)
    if control.dtype is not x.dtype:
        control = control.to(x.dtype)
    return control if control.shape == x.shape else control.expand_as(x)


def fused_step(
    state: TrafficState,
    road: Road,
    drivers: IDMParams,
    dt: float,
    av_acceleration: Tensor | None,
    av_steering: Tensor | None,
    neighbors: Neighbors | None,
    wheelbase_ratio: float,
    min_gap: float,
    lane_changes: MOBIL | None = None,
) -> tuple[TrafficState, Tensor, Neighbors, Tensor]:
    """One step; see :func:`difftraffic.dynamics.step` for the arguments. Differentiable (first
    order) in the state's float fields, the controls and tensor driver parameters; with
    ``lane_changes``, ``neighbors`` must count drivers changing lane as members of their target
    lanes (:func:`difftraffic.lane_change.with_target_lanes`), as the leaders this step returns
    do.

    Returns:
        ``(state, acceleration, neighbors, collided)`` at ``t + dt``; ``neighbors`` carries the
        rank order the next step starts its search from.
    """
    order = None if neighbors is None else neighbors.order
    if order is None:  # a first step, or leader relations from an eager search
        order = initial_order(state.x, road)
    if neighbors is None:
        box = BodyBox.of_state(state)
        leader, has_leader, order = find_leaders(
            state.x, box.low_y, box.high_y, state.active, road, order
        )
    else:
        leader, has_leader = neighbors.leader, neighbors.has_leader
    mobil, buffers = (None, ()) if lane_changes is None else _mobil_spec(lane_changes, state.x)
    frame = _Frame(
        road,
        dt,
        wheelbase_ratio,
        min_gap,
        state.is_av.contiguous(),
        state.active.contiguous(),
        leader.contiguous(),
        has_leader.contiguous(),
        order.contiguous(),
        mobil,
        buffers,
    )
    x = state.x
    inputs = [getattr(state, name) for name in _FLOAT_FIELDS]
    inputs += [_control_buffer(control, x) for control in (av_acceleration, av_steering)]
    params = tuple(getattr(drivers, name) for name in _PARAMETERS)
    if torch.is_grad_enabled() and any(
        isinstance(t, Tensor) and t.requires_grad for t in (*inputs, *params)
    ):
        outputs = list(_Step.apply(frame, *inputs, *params))  # type: ignore[no-untyped-call]
    else:  # the C pass reads the buffers; nothing records it, so nothing needs detaching
        outputs = _forward(frame, [t.contiguous() for t in inputs], params)
    x_next, y_next, v_next, heading_next, acceleration, leader_next, order_next = outputs[:7]
    has_leader_next, collided = outputs[7:]
    new_state = TrafficState(
        x_next, y_next, v_next, heading_next, state.length, state.width, state.is_av, state.active
    )
    return new_state, acceleration, Neighbors(leader_next, has_leader_next, order_next), collided
