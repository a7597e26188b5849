"""Car-following models: what a human driver does behind its leader, as pure tensor functions.

A model is its parameters, a frozen dataclass of floats or tensors broadcastable to ``[B, N]``
whose ranges and SI units are declared in :attr:`CarFollowingModel.PARAMETERS`, plus one pure
function of the driver's speed, the gap to its leader and the leader's speed::

    acceleration = model.acceleration(v, v_lead, gap, has_leader, dt, generator)

:func:`difftraffic.step` applies it to every human driver; :class:`difftraffic.scenario.Driver`
and :class:`difftraffic.scenario.KraussDriver` choose it per vehicle, and a world may mix models
(:class:`MixedDrivers`). Two models ship: :class:`difftraffic.IDMParams` (the Intelligent Driver
Model) and :class:`difftraffic.KraussParams` (SUMO's default Krauss model). A new model is a
subclass with its parameters, their :class:`Parameter` entries and ``acceleration``, registered
in :data:`MODELS` so that checkpoints can name it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar

import torch
from torch import Tensor

from difftraffic.errors import check_range

Scalar = Tensor | float
Model = TypeVar("Model", bound="CarFollowingModel")


class Parameter(NamedTuple):
    """The valid range and unit of one model parameter.

    Attributes:
        unit: SI unit, e.g. ``"m/s"``; ``""`` for a pure number.
        low, high: valid range; ``low_inclusive`` says whether ``low`` itself is valid.
        search: default calibration bounds ``(low, high)``; ``None`` for a parameter that
            calibration keeps at its given value by default (e.g. IDM's ``delta``).
    """

    unit: str
    low: float = 0.0
    low_inclusive: bool = False
    high: float = math.inf
    search: tuple[float, float] | None = None


def check_parameters(owner: str, values: object, parameters: Mapping[str, Parameter]) -> None:
    """Raise ``ValueError`` naming ``owner.name`` unless every attribute of ``values`` listed in
    ``parameters`` is finite and in its range."""
    for name, spec in parameters.items():
        check_range(
            f"{owner}.{name}",
            getattr(values, name),
            spec.low,
            spec.high,
            low_inclusive=spec.low_inclusive,
            unit=spec.unit,
        )


class CarFollowingModel:
    """Base of the car-following models: validation, dtype/device moves, world selection.

    Subclasses are frozen dataclasses whose fields are exactly the keys of :attr:`PARAMETERS`,
    each a float or a tensor broadcastable to ``[B, N]`` (drivers may differ); tensors keep their
    autograd history, so gradients reach the parameters.
    """

    NAME: ClassVar[str]
    """Short name of the model (``"idm"``, ``"krauss"``): the key of :data:`MODELS`."""
    PARAMETERS: ClassVar[Mapping[str, Parameter]]
    SPEED_CAP: ClassVar[str | None] = None
    """The parameter that acts only as a bound on the next speed (Krauss's ``v0``), if any:
    wherever the bound never binds a trajectory is flat in it, so calibration moves it down to
    the fastest replayed speed, the lowest value that replays the same."""

    def __post_init__(self) -> None:
        check_parameters(type(self).__name__, self, self.PARAMETERS)

    def acceleration(
        self,
        v: Tensor,
        v_lead: Tensor,
        gap: Tensor,
        has_leader: Tensor | None,
        dt: float,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Acceleration (m/s^2) of every driver over the next step of ``dt`` seconds.

        Args:
            v: ``[B, N]`` own speed (m/s), >= 0.
            v_lead: ``[B, N]`` the leader's speed (m/s); ignored where there is no leader.
            gap: ``[B, N]`` bumper-to-bumper gap to the leader (m), > 0 where there is a
                leader; ignored (may be anything, even inf) where there is none.
            has_leader: ``[B, N]`` bool; ``None`` means every vehicle has a leader.
            dt: the step (s); models defined on a time grid (Krauss) need it.
            generator: source of the model's random draws, if it has any
                (:attr:`needs_generator`).
        """
        raise NotImplementedError

    @property
    def needs_generator(self) -> bool:
        """Whether :meth:`acceleration` draws random numbers (and so needs a generator)."""
        return False

    def tensors(self) -> dict[str, Scalar]:
        """Parameter name -> value."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def to(self: Model, like: Tensor) -> Model:
        """The same parameters as tensors with ``like``'s dtype and device (autograd kept)."""
        return type(self)(
            **{
                name: torch.as_tensor(value).to(dtype=like.dtype, device=like.device)
                for name, value in self.tensors().items()
            }
        )

    def select_worlds(self: Model, mask: Tensor, other: Model) -> Model:
        """Parameters of ``self`` in the worlds where ``mask [B]`` is True, ``other``'s elsewhere
        (both ``[B, N]``)."""
        column = mask.unsqueeze(1)
        theirs = other.tensors()
        return type(self)(
            **{
                name: torch.where(column, torch.as_tensor(value), torch.as_tensor(theirs[name]))
                for name, value in self.tensors().items()
            }
        )

    def index_worlds(self: Model, index: Tensor) -> Model:
        """The parameters of worlds ``index`` (``[B']`` long), in that order; parameters shared
        by every world stay as they are."""
        return type(self)(
            **{name: _index_worlds(value, index) for name, value in self.tensors().items()}
        )

    def take_vehicles(self: Model, index: Tensor) -> Model:
        """The parameters of vehicles ``index`` (``[B, N]`` long): slot ``(b, k)`` gets those of
        vehicle ``(b, index[b, k])``; a float, shared by every vehicle, stays as it is."""
        taken = object.__new__(type(self))  # valid parameters stay valid: skip the checks
        for name, value in self.tensors().items():
            object.__setattr__(taken, name, _take_vehicles(value, index))
        return taken

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint stores: the model's name and its parameters as tensors."""
        return {
            "model": self.NAME,
            "params": {k: torch.as_tensor(v).detach().clone() for k, v in self.tensors().items()},
        }


class Drivers(Protocol):
    """The human drivers of a batch of worlds: one :class:`CarFollowingModel` or a
    :class:`MixedDrivers`."""

    def acceleration(
        self,
        v: Tensor,
        v_lead: Tensor,
        gap: Tensor,
        has_leader: Tensor | None,
        dt: float,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...

    @property
    def needs_generator(self) -> bool: ...

    def tensors(self) -> dict[str, Scalar]: ...

    def to(self, like: Tensor) -> Drivers: ...

    def select_worlds(self, mask: Tensor, other: Any) -> Drivers: ...

    def index_worlds(self, index: Tensor) -> Drivers: ...

    def take_vehicles(self, index: Tensor) -> Drivers: ...

    def state_dict(self) -> dict[str, Any]: ...


class MixedDrivers:
    """Drivers of several models in the same worlds: vehicle ``(b, n)`` follows
    ``models[choice[b, n]]``.

    Every model is evaluated for every vehicle and the chosen one kept, so each member's
    parameters must be valid (if unused) for all ``[B, N]`` vehicles; the scenario builder fills
    them with the model's defaults. The gradient reaches only the chosen model's parameters.

    Args:
        models: the member models, parameters broadcastable to ``[B, N]``.
        choice: ``[B, N]`` integer index into ``models``.
    """

    def __init__(self, models: tuple[CarFollowingModel, ...], choice: Tensor) -> None:
        if len(models) < 2:
            raise ValueError(f"MixedDrivers needs at least 2 models, got {len(models)}")
        if choice.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"MixedDrivers.choice must be an integer tensor, got {choice.dtype}")
        if bool(((choice < 0) | (choice >= len(models))).any()):
            raise ValueError(
                f"MixedDrivers.choice must be in [0, {len(models) - 1}] (one index per model)"
            )
        self.models = models
        self.choice = choice

    def acceleration(
        self,
        v: Tensor,
        v_lead: Tensor,
        gap: Tensor,
        has_leader: Tensor | None,
        dt: float,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The chosen model's acceleration for each vehicle (see
        :meth:`CarFollowingModel.acceleration`)."""
        result = self.models[0].acceleration(v, v_lead, gap, has_leader, dt, generator)
        for index, model in enumerate(self.models[1:], start=1):
            other = model.acceleration(v, v_lead, gap, has_leader, dt, generator)
            result = torch.where(self.choice == index, other, result)
        return result

    @property
    def needs_generator(self) -> bool:
        return any(model.needs_generator for model in self.models)

    def tensors(self) -> dict[str, Scalar]:
        """``"<model>.<parameter>"`` -> value for every member, and ``"choice"``."""
        named: dict[str, Scalar] = {"choice": self.choice}
        for model in self.models:
            named.update({f"{model.NAME}.{k}": v for k, v in model.tensors().items()})
        return named

    def to(self, like: Tensor) -> MixedDrivers:
        return MixedDrivers(tuple(m.to(like) for m in self.models), self.choice.to(like.device))

    def select_worlds(self, mask: Tensor, other: MixedDrivers) -> MixedDrivers:
        models = tuple(
            mine.select_worlds(mask, theirs)
            for mine, theirs in zip(self.models, other.models, strict=True)
        )
        return MixedDrivers(models, torch.where(mask.unsqueeze(1), self.choice, other.choice))

    def index_worlds(self, index: Tensor) -> MixedDrivers:
        models = tuple(model.index_worlds(index) for model in self.models)
        return MixedDrivers(models, _index_worlds(self.choice, index))

    def take_vehicles(self, index: Tensor) -> MixedDrivers:
        models = tuple(model.take_vehicles(index) for model in self.models)
        return MixedDrivers(models, _take_vehicles(self.choice, index))

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": "mixed",
            "members": [m.state_dict() for m in self.models],
            "choice": self.choice.detach().clone(),
        }


def _index_worlds(value: Any, index: Tensor) -> Any:
    """Rows ``index`` of a ``[B, N]`` parameter; a parameter without a world axis of its own
    (a float, a ``[N]`` or ``[1, N]`` tensor) is shared and returned as it is."""
    if isinstance(value, Tensor) and value.dim() == 2 and value.shape[0] > 1:
        return value[index]
    return value


def _take_vehicles(value: Any, index: Tensor) -> Any:
    """``value`` (a float or a tensor broadcastable to ``[B, N]``) of vehicles ``index``
    (``[B, K]`` long, any ``K``)."""
    if not isinstance(value, Tensor):
        return value
    if value.dim() == 0 or value.shape[-1] == 1:  # shared by every vehicle of a world
        return torch.broadcast_to(value, index.shape)
    return torch.broadcast_to(value, (index.shape[0], value.shape[-1])).gather(1, index)


MODELS: dict[str, type[CarFollowingModel]] = {}
"""Model name -> class, for checkpoints and the command line; filled by :func:`register`."""


def register(cls: type[Model]) -> type[Model]:
    """Class decorator: make a model known by its ``NAME`` (see :data:`MODELS`)."""
    MODELS[cls.NAME] = cls
    return cls


def model_class(name: str) -> type[CarFollowingModel]:
    """The registered model called ``name``; ``ValueError`` listing the valid names."""
    if name not in MODELS:
        raise ValueError(f"car-following model {name!r} is unknown; valid: {sorted(MODELS)}")
    return MODELS[name]


def drivers_from_state_dict(
    saved: Mapping[str, Any], device: torch.device | str | None = None
) -> Drivers:
    """Rebuild what :meth:`CarFollowingModel.state_dict` (or :class:`MixedDrivers`'s) wrote."""
    if saved["model"] == "mixed":
        members = tuple(drivers_from_state_dict(m, device) for m in saved["members"])
        return MixedDrivers(members, saved["choice"].to(device))  # type: ignore[arg-type]
    cls = model_class(saved["model"])
    return cls(**{k: v.to(device) for k, v in saved["params"].items()})
