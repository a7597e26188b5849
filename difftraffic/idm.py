"""The Intelligent Driver Model (Treiber, Hennecke & Helbing, 2000) as a pure tensor function.

The form is the one SUMO uses::

    s* = s0 + max(0, v T + v (v - v_lead) / (2 sqrt(a b)))
    acc = a (1 - (v / v0)^delta - (s* / gap)^2)

with ``gap`` the bumper-to-bumper distance to the leader. A vehicle without a leader drives on free
road: its interaction term is exactly zero, and so is the gradient through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from difftraffic.car_following import CarFollowingModel, Parameter, Scalar, register


@register
@dataclass(frozen=True)
class IDMParams(CarFollowingModel):
    """Driver parameters: floats or tensors broadcastable to ``[B, N]``, so drivers may differ.

    Attributes:
        v0: desired speed (m/s), > 0. Custom scenarios default to the lane speed limit.
        T: safe time headway (s), > 0.
        a: maximum acceleration (m/s^2), > 0.
        b: comfortable deceleration (m/s^2), > 0.
        delta: acceleration exponent, >= 1 (below 1 the free-road term has an infinite
            derivative at standstill).
        s0: minimum standstill gap (m), >= 0.

    Defaults are SUMO's passenger-car IDM except ``v0``, which has no universal default.
    Tensors keep their autograd history, so gradients reach the parameters.
    """

    NAME: ClassVar[str] = "idm"
    PARAMETERS: ClassVar[Mapping[str, Parameter]] = {
        "v0": Parameter("m/s", search=(1.0, 70.0)),
        "T": Parameter("s", search=(0.1, 5.0)),
        "a": Parameter("m/s^2", search=(0.1, 10.0)),
        "b": Parameter("m/s^2", search=(0.1, 10.0)),
        "delta": Parameter("", 1.0, low_inclusive=True),
        "s0": Parameter("m", low_inclusive=True, search=(0.0, 10.0)),
    }

    v0: Scalar
    T: Scalar = 1.0
    a: Scalar = 2.6
    b: Scalar = 4.5
    delta: Scalar = 4.0
    s0: Scalar = 2.5

    def acceleration(
        self,
        v: Tensor,
        v_lead: Tensor,
        gap: Tensor,
        has_leader: Tensor | None,
        dt: float,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """:func:`idm_acceleration` (the IDM needs neither ``dt`` nor random draws)."""
        return idm_acceleration(v, v_lead, gap, self, has_leader)


def desired_gap(v: Tensor, v_lead: Tensor, params: IDMParams) -> Tensor:
    """IDM desired dynamical gap ``s*`` (m), shape of the broadcast inputs (``[B, N]``)."""
    approach = v * params.T + v * (v - v_lead) / (2.0 * (params.a * params.b) ** 0.5)
    return params.s0 + torch.relu(approach)


def _power(ratio: Tensor, delta: Scalar) -> Tensor:
    """``ratio ** delta``; the IDM's usual ``delta = 4`` (a number) by two squarings, a tenth of
    ``torch.pow``'s time (as the fused step does)."""
    if not isinstance(delta, Tensor) and delta == 4:
        squared = ratio * ratio
        return squared * squared
    return torch.pow(ratio, delta)


def idm_acceleration(
    v: Tensor,
    v_lead: Tensor,
    gap: Tensor,
    params: IDMParams,
    has_leader: Tensor | None = None,
) -> Tensor:
    """IDM acceleration (m/s^2).

    Args:
        v: ``[B, N]`` own speed (m/s), >= 0.
        v_lead: ``[B, N]`` the leader's speed (m/s); ignored where there is no leader.
        gap: ``[B, N]`` bumper-to-bumper gap to the leader (m), > 0 where there is a leader;
            ignored (may be anything, even inf) where there is none.
        params: driver parameters broadcastable to ``[B, N]``.
        has_leader: ``[B, N]`` bool; ``None`` means every vehicle has a leader.

    Returns:
        ``[B, N]`` acceleration, never above ``params.a``.
    """
    free_road = 1.0 - _power(v / params.v0, params.delta)
    if has_leader is None:
        return params.a * (free_road - (desired_gap(v, v_lead, params) / gap) ** 2)
    # Substitute harmless inputs where there is no leader so that neither branch of the
    # `where` produces inf/NaN: autograd differentiates both.
    safe_gap = torch.where(has_leader, gap, torch.ones_like(gap))
    safe_v_lead = torch.where(has_leader, v_lead, v)
    interaction = (desired_gap(v, safe_v_lead, params) / safe_gap) ** 2
    interaction = torch.where(has_leader, interaction, torch.zeros_like(interaction))
    return params.a * (free_road - interaction)


def equilibrium_gap(v: Tensor, params: IDMParams) -> Tensor:
    """Gap (m) at which a vehicle following a leader of equal speed ``v`` has zero acceleration.

    Defined for ``0 <= v < v0``: ``s_e = s*(v, v) / sqrt(1 - (v / v0)^delta)``.
    """
    return desired_gap(v, v, params) / torch.sqrt(1.0 - torch.pow(v / params.v0, params.delta))
