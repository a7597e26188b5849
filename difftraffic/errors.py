"""Input validation: errors that name the parameter, its value and the valid range."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _first_bad(values: Tensor, bad: Tensor) -> str:
    flat = values.detach().reshape(-1)
    index = int(torch.nonzero(bad.reshape(-1))[0])
    if values.dim() == 0:
        return repr(flat[index].item())
    position = tuple(int(i) for i in torch.unravel_index(torch.tensor(index), values.shape))
    return f"{flat[index].item()!r} at index {position}"


SIMULATION_DTYPES = (torch.float32, torch.float64)
"""Floating types the simulator runs in: half precision drifts metres within a few hundred steps."""


def check_number(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is a real number or a real tensor (not a string, a
    bool or ``None``)."""
    if isinstance(value, Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{name} must be a real tensor, got dtype {value.dtype}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")


def check_simulation_dtype(name: str, dtype: object) -> None:
    """Raise ``ValueError`` unless ``dtype`` is ``torch.float32`` or ``torch.float64``."""
    if dtype not in SIMULATION_DTYPES:
        raise ValueError(
            f"{name} must be torch.float32 or torch.float64, got {dtype!r}"
            + (" (too coarse: positions drift)" if dtype in (torch.float16, torch.bfloat16) else "")
        )


def check_device(name: str, device: object) -> torch.device:
    """``device`` as a :class:`torch.device`; ``ValueError`` naming ``name`` when it is not one or
    this torch build cannot allocate on it (e.g. ``"cuda"`` on a CPU-only build)."""
    try:
        parsed: torch.device = torch.device(device)  # type: ignore[call-overload]
    except (RuntimeError, TypeError):
        raise ValueError(
            f"{name}={device!r} is not a torch device (e.g. 'cpu', 'cuda:0')"
        ) from None
    try:
        torch.empty(0, device=parsed)
    except (RuntimeError, AssertionError) as error:
        reason = str(error).splitlines()[0]
        raise ValueError(
            f"{name}={device!r} is not available in this torch build ({reason})"
        ) from None
    return parsed


def check_finite(name: str, value: Tensor | float) -> None:
    """Raise ``ValueError`` if ``value`` is not a real number or tensor, or holds NaN or inf."""
    check_number(name, value)
    tensor = torch.as_tensor(value)
    if tensor.is_floating_point():
        bad = ~torch.isfinite(tensor)
        if bool(bad.any()):
            raise ValueError(f"{name} must be finite, got {_first_bad(tensor, bad)}")


def check_range(
    name: str,
    value: Tensor | float,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    unit: str = "",
) -> None:
    """Raise ``ValueError`` unless every element of ``value`` is finite and inside the range."""
    check_finite(name, value)
    tensor = torch.as_tensor(value)
    too_low = tensor < low if low_inclusive else tensor <= low
    too_high = tensor > high if high_inclusive else tensor >= high
    bad = too_low | too_high
    if bool(bad.any()):
        left = "[" if low_inclusive and low != -math.inf else "("
        right = "]" if high_inclusive and high != math.inf else ")"
        suffix = f" {unit}" if unit else ""
        raise ValueError(
            f"{name} must be in {left}{low}, {high}{right}{suffix}, got {_first_bad(tensor, bad)}"
        )


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        valid = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be one of {valid}, got {value!r}")


def check_count(name: str, value: object, low: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer (not a bool) of at least ``low``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_positive(name: str, value: Tensor | float, unit: str = "") -> None:
    """Raise ``ValueError`` unless every element is finite and strictly positive."""
    check_range(name, value, 0.0, low_inclusive=False, unit=unit)


def check_non_negative(name: str, value: Tensor | float, unit: str = "") -> None:
    """Raise ``ValueError`` unless every element is finite and at least zero."""
    check_range(name, value, 0.0, unit=unit)
