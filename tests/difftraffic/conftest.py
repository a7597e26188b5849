"""Shared builders for the difftraffic core tests.

The builders are exposed as session-scoped fixtures returning plain functions, so hypothesis tests
can use them without function-scoped-fixture warnings and no test module imports another.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import pytest
import torch

from difftraffic.road import Road
from difftraffic.state import TrafficState

StateFactory = Callable[..., TrafficState]

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))]  # fmt: skip


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes ``device`` runs on the CPU and, where torch sees one, on CUDA."""
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", DEVICES)


def move_to(device: str, value):
    """``value`` (a tensor, or a dataclass, named tuple, tuple or list of them) with its tensors
    on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(move_to(device, item) for item in value))
    if isinstance(value, tuple | list):
        return type(value)(move_to(device, item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        moved = {f.name: move_to(device, getattr(value, f.name)) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **moved)
    return value


def _as_batch(values: Sequence | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    tensor = torch.as_tensor(values, dtype=dtype)
    return tensor.unsqueeze(0) if tensor.dim() == 1 else tensor


def build_state(
    x: Sequence | torch.Tensor,
    y: Sequence | torch.Tensor,
    v: Sequence | torch.Tensor | None = None,
    heading: Sequence | torch.Tensor | None = None,
    length: float | Sequence | torch.Tensor = 5.0,
    width: float | Sequence | torch.Tensor = 2.0,
    is_av: Sequence | torch.Tensor | None = None,
    active: Sequence | torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
) -> TrafficState:
    """A ``TrafficState`` from lists (``[N]`` for one world or ``[B, N]``); missing fields default
    to speed 0, heading 0, human, active. Float tensors passed in keep their autograd history."""
    x_t = x if isinstance(x, torch.Tensor) and x.dim() == 2 else _as_batch(x, dtype)

    def field(value, default: float) -> torch.Tensor:
        if value is None:
            return torch.full_like(x_t, default)
        if isinstance(value, torch.Tensor) and value.dim() == 2:
            return value
        if isinstance(value, float | int):
            return torch.full_like(x_t, float(value))
        return _as_batch(value, dtype).expand_as(x_t).clone()

    def mask(value, default: bool) -> torch.Tensor:
        if value is None:
            return torch.full(x_t.shape, default, dtype=torch.bool)
        return _as_batch(value, torch.bool).expand(x_t.shape).clone()

    return TrafficState(
        x=x_t,
        y=field(y, 0.0),
        v=field(v, 0.0),
        heading=field(heading, 0.0),
        length=field(length, 5.0),
        width=field(width, 2.0),
        is_av=mask(is_av, False),
        active=mask(active, True),
    )


def lane_platoons(
    road: Road,
    batch: int,
    n: int,
    spacing: float,
    speed: tuple[float, float],
    generator: torch.Generator,
    unused: int = 0,
) -> TrafficState:
    """``batch`` worlds of ``n`` 5 x 2 m cars on the lane centres, float64: car ``k`` in lane
    ``k % L`` at ``(k // L) spacing`` m plus up to 1 m of random offset, speeds uniform in
    ``speed`` (m/s), car 0 autonomous, the last ``unused`` slots inactive."""
    lane = torch.arange(n) % road.num_lanes
    row = (torch.arange(n) // road.num_lanes).double()
    x = row * spacing + torch.rand(batch, n, generator=generator).double()
    low, high = speed
    return TrafficState(
        x=x,
        y=((lane + 0.5) * road.lane_width).double().expand(batch, n).clone(),
        v=low + (high - low) * torch.rand(batch, n, generator=generator).double(),
        heading=torch.zeros(batch, n, dtype=torch.float64),
        length=torch.full((batch, n), 5.0, dtype=torch.float64),
        width=torch.full((batch, n), 2.0, dtype=torch.float64),
        is_av=(torch.arange(n) == 0).expand(batch, n).clone(),
        active=(torch.arange(n) < n - unused).expand(batch, n).clone(),
    )


@pytest.fixture(scope="session")
def make_state() -> StateFactory:
    return build_state


@pytest.fixture(scope="session")
def make_platoons() -> Callable[..., TrafficState]:
    """:func:`lane_platoons`."""
    return lane_platoons


@pytest.fixture(scope="session")
def to_device() -> Callable:
    """:func:`move_to`."""
    return move_to


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Run each test on one intra-op thread (restored afterwards).

    These tests use tiny tensors, for which torch's thread pool costs far more than it saves: on the
    2-core CI machine under load, one ``min(dim=...)`` on a ``[1, 4, 4]`` tensor took ~10 ms with 2
    threads and ~2 us with 1.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
