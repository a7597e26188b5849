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


def check_finite(name: str, value: Tensor | float) -> None:
    """Raise ``ValueError`` if ``value`` holds NaN or inf anywhere."""
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


def check_positive(name: str, value: Tensor | float, unit: str = "") -> None:
    """Raise ``ValueError`` unless every element is finite and strictly positive."""
    check_range(name, value, 0.0, low_inclusive=False, unit=unit)


def check_non_negative(name: str, value: Tensor | float, unit: str = "") -> None:
    """Raise ``ValueError`` unless every element is finite and at least zero."""
    check_range(name, value, 0.0, unit=unit)
