"""Run configuration: which task, which algorithm, its hyperparameters, and training settings.

A run is described by one mapping with three parts, stored as YAML (``configs/<task>_<algo>.yaml``
ship the paper's settings; every run writes its resolved copy to ``<run_dir>/config.yaml``)::

    task: dejong64
    algo: gippo
    train: {epochs: 2000, num_envs: 64, seed: 1, ...}      # TrainSettings
    hyperparameters: {actor_lr: 1.0e-2, ...}               # the algorithm's config dataclass

``--set key=value`` overrides take ``train.<field>``, ``hyperparameters.<field>``,
``task_kwargs.<k>`` or a bare field name that belongs to exactly one part.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["RunConfig", "TrainSettings", "apply_overrides", "default_config", "load_run_config"]


@dataclass
class TrainSettings:
    """How a run is executed (not part of the learning algorithm).

    Attributes:
        seed: seeds networks, noise and shuffles (every value, 0 included, is used).
        epochs: epochs (rollout windows) to run; each collects ``horizon * num_envs`` steps.
        num_envs: parallel worlds.
        device: torch device string, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"`` or ``"float64"``.
        checkpoint_every: write a checkpoint every this many epochs (and always at the end); the
            default 1 means a killed run loses at most the epoch it was in (a save costs a few
            milliseconds, see ``docs/reliability.md``).
        num_threads: torch intra-op threads (1 makes CPU runs bit-reproducible).
        tensorboard: write TensorBoard event files beside the CSV log.
        reward_window: episodes averaged by the smoothed reward (as the authors' logs).
    """

    seed: int = 1
    epochs: int = 2000
    num_envs: int = 64
    device: str = "cpu"
    dtype: str = "float32"
    checkpoint_every: int = 1
    num_threads: int = 1
    tensorboard: bool = True
    reward_window: int = 100

    def __post_init__(self) -> None:
        for name, low in (
            ("epochs", 1),
            ("num_envs", 1),
            ("checkpoint_every", 1),
            ("num_threads", 1),
            ("reward_window", 1),
        ):
            if getattr(self, name) < low:
                raise ValueError(f"train.{name}={getattr(self, name)} must be >= {low}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"train.dtype={self.dtype!r}; valid: 'float32', 'float64'")


@dataclass
class RunConfig:
    """Everything that defines a run; see the module docstring."""

    task: str
    algo: str
    train: TrainSettings = field(default_factory=TrainSettings)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    task_kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping, as written to ``config.yaml``."""
        return {
            "task": self.task,
            "algo": self.algo,
            "train": dataclasses.asdict(self.train),
            "hyperparameters": dict(self.hyperparameters),
            "task_kwargs": dict(self.task_kwargs),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict`; validates the train settings and hyperparameters."""
        unknown = sorted(set(values) - {"task", "algo", "train", "hyperparameters", "task_kwargs"})
        if unknown:
            raise ValueError(f"unknown top-level config keys {unknown}")
        config = cls(
            task=str(values["task"]),
            algo=str(values["algo"]),
            train=TrainSettings(**(values.get("train") or {})),
            hyperparameters=dict(values.get("hyperparameters") or {}),
            task_kwargs=dict(values.get("task_kwargs") or {}),
        )
        config.algorithm_config()
        return config

    def resolved(self) -> dict[str, Any]:
        """:meth:`to_dict` with every setting spelled out, dataclass defaults included."""
        values = self.to_dict()
        values["hyperparameters"] = plain(dataclasses.asdict(self.algorithm_config()))
        return values

    def algorithm_config(self) -> Any:
        """The algorithm's hyperparameter dataclass built from ``hyperparameters``."""
        from difftraffic_rl.algorithms import get_algorithm

        return get_algorithm(self.algo).config_class.from_dict(self.hyperparameters)


def plain(value: Any) -> Any:
    """Tuples as lists, recursively, so that YAML shows plain sequences."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def default_config(task: str, algo: str) -> dict[str, Any]:
    """The shipped configuration for ``task`` x ``algo``, or dataclass defaults if none ships."""
    path = resources.files("difftraffic_rl") / "configs" / f"{task}_{algo}.yaml"
    if path.is_file():
        return yaml.safe_load(path.read_text())
    return {"task": task, "algo": algo}


def load_run_config(path: str | Path) -> RunConfig:
    """Read a ``config.yaml`` (a run's, or a user-written one)."""
    return RunConfig.from_dict(yaml.safe_load(Path(path).read_text()))


def _number(key: str, value: Any, kind: str = "a number") -> float:
    """``value`` as a float (YAML reads ``1e-3`` as a string); ``ValueError`` naming ``key``."""
    if not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"{key}={value!r} is not {kind}")


def _coerce(key: str, value: Any, like: Any) -> Any:
    """``value`` (parsed YAML) as the type of the setting ``like`` it replaces.

    Nothing is converted with a loss: ``2.7`` for an integer setting, ``maybe`` for a boolean or a
    word for a number raise ``ValueError`` naming ``key``, the value and what is valid.
    """
    if like is None or isinstance(like, str) and isinstance(value, str):
        return value
    if isinstance(like, bool):
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}={value!r} is not a boolean; valid: true, false")
    if isinstance(like, float):
        return _number(key, value)
    if isinstance(like, int):
        number = _number(key, value, "an integer")
        if not number.is_integer():
            raise ValueError(f"{key}={value!r} is not an integer")
        return int(number)
    if isinstance(like, (tuple, list)):
        if isinstance(value, (tuple, list)):
            return list(value)
        raise ValueError(f"{key}={value!r} is not a list; write it as [a, b]")
    if isinstance(like, str):
        raise ValueError(f"{key}={value!r} is not a string")
    return value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings to a config mapping (see the module docstring).

    Values are parsed as YAML (``1e-3``, ``[64, 64]``, ``true``) and take the type of the setting
    they replace. Raises ``ValueError`` for malformed or ambiguous keys.
    """
    from difftraffic_rl.algorithms import get_algorithm

    result = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for section in ("train", "hyperparameters", "task_kwargs"):
        result.setdefault(section, {})
    defaults = {
        "train": dataclasses.asdict(TrainSettings()),
        "hyperparameters": dataclasses.asdict(get_algorithm(str(result["algo"])).config_class()),
        "task_kwargs": {},
    }
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        if "." in key:
            section, name = key.split(".", 1)
            if section not in defaults:
                raise ValueError(f"override {key!r}: section must be one of {sorted(defaults)}")
        else:
            sections = [s for s, fields in defaults.items() if key in fields]
            if len(sections) != 1:
                raise ValueError(
                    f"override {key!r} matches sections {sections}; write train.{key} or "
                    f"hyperparameters.{key}"
                )
            section, name = sections[0], key
        if section != "task_kwargs" and name not in defaults[section]:
            raise ValueError(
                f"override {key!r}: {section} has no field {name!r}; valid: "
                f"{sorted(defaults[section])}"
            )
        current = result[section].get(name, defaults[section].get(name))
        try:
            parsed = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            reason = str(error).splitlines()[0]
            raise ValueError(f"override {item!r}: the value is not valid YAML ({reason})") from None
        result[section][name] = _coerce(key, parsed, current)
    return result
