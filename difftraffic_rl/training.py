"""The training loop: runs epochs, logs (CSV + TensorBoard), shows progress, writes checkpoints
atomically, resumes killed runs exactly, and evaluates trained policies.

From Python::

    import difftraffic_rl
    result = difftraffic_rl.train(task="dejong", algo="gippo", seed=1, epochs=200)
    result.algorithm.act(obs)          # the trained policy
    result.metrics[-1]["reward_smoothed"]
    difftraffic_rl.resume(result.run_dir, epochs=300)   # 100 epochs more

A run directory holds ``config.yaml`` (resolved configuration), ``progress.csv`` (one row per
epoch), ``tb/`` (TensorBoard events) and ``checkpoints/checkpoint.pt`` (latest state). A
checkpoint holds only tensors and plain data and is read with ``torch.load(weights_only=True)``, so
opening one that someone sent you runs none of their code (:func:`load_checkpoint`).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import os
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml

from difftraffic_rl.algorithms import Algorithm, get_algorithm
from difftraffic_rl.config import (
    RunConfig,
    apply_overrides,
    default_config,
    load_run_config,
)
from difftraffic_rl.evaluation import episode_returns
from difftraffic_rl.rollout import EpisodeTracker
from difftraffic_rl.tasks import make_task

__all__ = [
    "NO_EPISODE_YET",
    "RESUMABLE_SETTINGS",
    "RewardMeter",
    "CheckpointError",
    "TrainResult",
    "Trainer",
    "evaluate",
    "load_algorithm",
    "load_checkpoint",
    "load_trainer",
    "resume",
    "train",
]

CHECKPOINT = Path("checkpoints") / "checkpoint.pt"
CHECKPOINT_KEYS = frozenset({"config", "algorithm", "epoch", "env_steps", "wall_time", "obs"})

# Shown instead of the smoothed reward, which is NaN until the first episode ends (a 1000-step
# pace-car episode spans about 31 epochs of horizon 32); progress.csv keeps the NaN.
NO_EPISODE_YET = "no episode finished yet"

# The settings a resume may change: they say how long and how visibly a run trains, not what its
# checkpoint means. Any other change (network sizes, num_envs, seed, device, dtype, a
# hyperparameter, the task's parameters) would continue a different run from this run's state.
RESUMABLE_SETTINGS = (
    "train.epochs",
    "train.checkpoint_every",
    "train.tensorboard",
    "train.num_threads",
)


class RewardMeter:
    """Running mean over (about) the last ``window`` finished episodes, as the authors log it.

    With ``n`` new episodes of mean ``m``: ``old = min(window - n, count)``,
    ``mean <- (mean * old + m * n) / (old + n)``.
    """

    def __init__(self, window: int = 100) -> None:
        self.window = window
        self.mean = math.nan
        self.count = 0

    def update(self, returns: torch.Tensor) -> float:
        """Fold in the returns ``[E]`` of newly finished episodes; return the running mean."""
        n = min(int(returns.numel()), self.window)
        if n == 0:
            return self.mean
        old = min(self.window - n, self.count)
        batch_mean = float(returns.mean())
        previous = 0.0 if old == 0 else self.mean
        self.mean = (previous * old + batch_mean * n) / (old + n)
        self.count = old + n
        return self.mean


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        algorithm: the trained algorithm; ``algorithm.act(obs)`` is the policy, and
            ``algorithm.actor`` / ``algorithm.critic`` the networks.
        metrics: one dict per epoch of this call (the rows of ``progress.csv``).
        run_dir: where logs and checkpoints went (``None`` for an unlogged run).
    """

    algorithm: Algorithm
    metrics: list[dict[str, float]] = field(default_factory=list)
    run_dir: Path | None = None


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _check_device(device: str) -> None:
    """``ValueError`` naming ``train.device`` unless this torch build can allocate on it."""
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        reason = str(error).splitlines()[0]
        raise ValueError(
            f"train.device={device!r} is not a usable torch device here ({reason})"
        ) from None


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: corrupted, truncated or not ours."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :meth:`Trainer.save_checkpoint`.

    Only tensors and plain data are unpickled (``weights_only=True``): a file holding anything
    else is refused, never executed. Raises ``FileNotFoundError`` for a missing file and
    :class:`CheckpointError` (one line naming the file) for a corrupted, truncated or foreign one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises OSError, RuntimeError, EOFError, KeyError, ...
        if isinstance(error, pickle.UnpicklingError) and "Unsupported global" in str(error):
            raise CheckpointError(
                f"checkpoint {path} holds objects other than tensors and plain data; refused "
                "without running them (a difftraffic_rl checkpoint holds only those)"
            ) from None
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupted or truncated ({type(error).__name__}: {reason})"
        ) from None
    missing = sorted(CHECKPOINT_KEYS - set(state)) if isinstance(state, dict) else None
    if missing is None or missing:
        raise CheckpointError(
            f"{path} is not a difftraffic_rl checkpoint"
            + (f" (missing {missing})" if missing else f" (it holds a {type(state).__name__})")
        )
    return state


def _new_run_dir(logdir: Path, config: RunConfig, name: str | None = None) -> Path:
    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"logdir {logdir} cannot be created ({error.strerror})") from None
    if name is not None:
        run_dir = logdir / name
        run_dir.mkdir(parents=True, exist_ok=False)
        return run_dir
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{config.task}_{config.algo}_s{config.train.seed}_{stamp}"
    for suffix in range(1000):
        candidate = logdir / (base if suffix == 0 else f"{base}-{suffix}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh run directory under {logdir}")


@contextlib.contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run torch on ``count`` intra-op threads inside the block, the caller's count restored
    after: a run's numbers then do not depend on the thread count of the process that starts
    it (a reduction split over two threads rounds differently)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class Trainer:
    """Holds a run's environment, algorithm and bookkeeping; see the module docstring.

    Args:
        config: the run configuration.
        run_dir: where to log and checkpoint; ``None`` disables files (no resume then).
    """

    def __init__(self, config: RunConfig, run_dir: Path | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        settings = config.train
        _check_device(settings.device)
        dtype = getattr(torch, settings.dtype)
        with intra_op_threads(settings.num_threads):
            self.env = make_task(
                config.task, settings.num_envs, settings.device, dtype, **config.task_kwargs
            )
            algorithm_class = get_algorithm(config.algo)
            self.algorithm = algorithm_class(
                config.algorithm_config(),
                self.env.obs_dim,
                self.env.action_dim,
                seed=settings.seed,
                device=settings.device,
                dtype=dtype,
            )
            self.obs = self.env.reset(seed=settings.seed)
        self.tracker = EpisodeTracker(settings.num_envs, self.obs.device, self.obs.dtype)
        self.meter = RewardMeter(settings.reward_window)
        self.epoch = 0
        self.env_steps = 0
        self.wall_time = 0.0
        self.cpu_time = 0.0
        self._writer: Any = None

    # ------------------------------------------------------------------------------- logging
    def _log(self, row: dict[str, float]) -> None:
        if self.run_dir is None:
            return
        path = self.run_dir / "progress.csv"
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(row))
        if not path.exists():
            writer.writeheader()
        writer.writerow(row)
        # One write() of the whole row on an O_APPEND descriptor: a kill leaves no torn line.
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, text.getvalue().encode())
        finally:
            os.close(descriptor)
        if self.config.train.tensorboard:
            if self._writer is None:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    raise ImportError(
                        "train.tensorboard=true needs tensorboard: pip install 'difftraffic[rl]' "
                        "or --set train.tensorboard=false"
                    ) from None

                self._writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.env_steps)
            for key, value in row.items():
                if key != "epoch":
                    name = key if "/" in key else f"charts/{key}"
                    self._writer.add_scalar(name, value, int(row["env_steps"]))

    def _truncate_log(self) -> None:
        """Drop CSV rows written after the checkpoint a resumed run starts from.

        A run killed while writing leaves a torn last line, which the next rows are appended to:
        rows that do not have one value per column are dropped, not read into the wrong columns.
        The file is replaced atomically, so a failure here cannot cut the log short.
        """
        assert self.run_dir is not None
        path = self.run_dir / "progress.csv"
        if not path.exists():
            return
        with path.open(newline="") as handle:
            header, *rows = list(csv.reader(handle)) or [[]]
        epoch_column = header.index("epoch") if "epoch" in header else None
        kept = {}
        for row in rows:
            if len(row) != len(header) or epoch_column is None:
                continue
            try:
                epoch = int(float(row[epoch_column]))
            except ValueError:
                continue
            if epoch <= self.epoch:
                kept[epoch] = row
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            if header:
                writer.writerow(header)
            writer.writerows(kept[epoch] for epoch in sorted(kept))
        os.replace(tmp, path)

    # --------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Algorithm and loop state: enough to continue exactly."""
        env_state = self.env.state_dict() if hasattr(self.env, "state_dict") else None
        return {
            "config": self.config.to_dict(),
            "algorithm": self.algorithm.state_dict(),
            "epoch": self.epoch,
            "env_steps": self.env_steps,
            "wall_time": self.wall_time,
            "cpu_time": self.cpu_time,
            "obs": self.obs,
            "tracker": self.tracker.state_dict(),
            "meter": {"mean": self.meter.mean, "count": self.meter.count},
            "env": env_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.algorithm.load_state_dict(state["algorithm"])
        self.epoch = int(state["epoch"])
        self.env_steps = int(state["env_steps"])
        self.wall_time = float(state["wall_time"])
        self.cpu_time = float(state["cpu_time"])
        self.tracker.load_state_dict(state["tracker"])
        self.meter.mean, self.meter.count = state["meter"]["mean"], state["meter"]["count"]
        if state["env"] is not None and hasattr(self.env, "load_state_dict"):
            self.env.load_state_dict(state["env"])
            self.obs = state["obs"].to(self.obs.device)

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/checkpoint.pt`` atomically (temporary file, then rename)."""
        assert self.run_dir is not None
        path = self.run_dir / CHECKPOINT
        _atomic_save(self.state_dict(), path)
        return path

    # ---------------------------------------------------------------------------------- loop
    def run_epoch(self) -> dict[str, float]:
        """Train one epoch and return its log row."""
        start, cpu_start = time.perf_counter(), time.process_time()
        self.epoch += 1
        rollout, metrics = self.algorithm.train_epoch(
            self.env, self.obs, self.tracker, self.epoch, self.config.train.epochs
        )
        self.obs = rollout.next_raw_obs
        self.env_steps += rollout.num_samples
        self.wall_time += time.perf_counter() - start
        self.cpu_time += time.process_time() - cpu_start
        returns = rollout.episode_returns
        row = {
            "epoch": float(self.epoch),
            "env_steps": float(self.env_steps),
            "wall_time": self.wall_time,
            "cpu_time": self.cpu_time,
            "reward": float(returns.mean()) if returns.numel() else math.nan,
            "reward_smoothed": self.meter.update(returns),
            "episode_length": (
                float(rollout.episode_lengths.float().mean()) if returns.numel() else math.nan
            ),
            "episodes": float(returns.numel()),
        }
        row.update(metrics)
        if hasattr(self.env, "log_metrics"):
            row.update(self.env.log_metrics())
        return row

    def run(
        self,
        progress: bool = True,
        callback: Callable[[dict[str, float]], None] | None = None,
        stop_after: int | None = None,
    ) -> list[dict[str, float]]:
        """Train until ``train.epochs`` (or ``stop_after`` more epochs); return the rows.

        ``callback(row)`` is called after every epoch; checkpoints every ``checkpoint_every``
        epochs and at the end when a run directory exists, where a finished run also exports its
        deterministic policy to ``policy.pt2`` (see :mod:`difftraffic_rl.export`). The progress
        bar shows the smoothed reward, or :data:`NO_EPISODE_YET` before the first episode ends.
        Torch runs on ``train.num_threads`` intra-op threads meanwhile; the caller's setting is
        restored on return.
        """
        from tqdm import tqdm

        total = self.config.train.epochs
        last = total if stop_after is None else min(total, self.epoch + stop_after)
        rows: list[dict[str, float]] = []
        bar = tqdm(
            total=total,
            initial=self.epoch,
            disable=not progress,
            unit="epoch",
            desc=f"{self.config.algo} {self.config.task}",
            dynamic_ncols=True,
        )
        try:
            with intra_op_threads(self.config.train.num_threads):
                while self.epoch < last:
                    row = self.run_epoch()
                    rows.append(row)
                    self._log(row)
                    if self.run_dir is not None and (
                        self.epoch % self.config.train.checkpoint_every == 0 or self.epoch == total
                    ):
                        self.save_checkpoint()
                    if callback is not None:
                        callback(row)
                    reward = row["reward_smoothed"]
                    postfix = [NO_EPISODE_YET if math.isnan(reward) else f"reward={reward:.3e}"]
                    if "gippo/alpha" in row:
                        postfix.append(f"alpha={row['gippo/alpha']:.2e}")
                    bar.set_postfix_str(", ".join(postfix), refresh=False)
                    bar.update(1)
        finally:
            bar.close()
            if self._writer is not None:
                self._writer.flush()
        if self.run_dir is not None and self.epoch == total:
            from difftraffic.policy import POLICY_FILE
            from difftraffic_rl.export import export_policy

            export_policy(self.algorithm, self.run_dir / POLICY_FILE)
        return rows

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def resolve_config(
    task: str,
    algo: str,
    seed: int = 1,
    epochs: int | None = None,
    device: str | None = None,
    overrides: list[str] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    base_config: dict[str, Any] | None = None,
) -> RunConfig:
    """The configuration :func:`train` runs with these arguments (see there)."""
    values = default_config(task, algo) if base_config is None else dict(base_config)
    for key, expected in (("task", task), ("algo", algo)):
        if values.setdefault(key, expected) != expected:
            raise ValueError(
                f"the configuration's {key} {values[key]!r} conflicts with {expected!r}"
            )
    items = [f"train.seed={seed}"]
    if epochs is not None:
        items.append(f"train.epochs={epochs}")
    if device is not None:
        items.append(f"train.device={device}")
    items += [f"hyperparameters.{k}={v}" for k, v in (hyperparameters or {}).items()]
    return RunConfig.from_dict(apply_overrides(values, items + list(overrides or [])))


def train(
    task: str,
    algo: str,
    seed: int = 1,
    epochs: int | None = None,
    device: str | None = None,
    logdir: str | Path | None = "runs",
    overrides: list[str] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    progress: bool = True,
    callback: Callable[[dict[str, float]], None] | None = None,
    run_name: str | None = None,
    base_config: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``algo`` on ``task`` with the shipped (paper) configuration, or ``base_config``.

    Args:
        task: a registered task name (``difftraffic_rl.tasks.available_tasks()``).
        algo: a registered algorithm name (``difftraffic_rl.algorithms.ALGORITHMS``).
        seed: run seed (every value is used, 0 included).
        epochs: override ``train.epochs``.
        device: override ``train.device``.
        logdir: parent of the new run directory; ``None`` writes nothing.
        overrides: ``"key=value"`` strings as on the command line.
        hyperparameters: algorithm hyperparameters to override.
        progress: show a progress bar.
        callback: called with every epoch's metrics row.
        run_name: name of the run directory under ``logdir`` (it must not exist yet); default
            ``<task>_<algo>_s<seed>_<timestamp>``.
        base_config: a configuration mapping to start from instead of the shipped one (a user's
            YAML file, as ``train --config``); its ``task`` and ``algo``, when present, must be
            ``task`` and ``algo``; unnamed settings keep the dataclass defaults.
    """
    config = resolve_config(
        task, algo, seed, epochs, device, overrides, hyperparameters, base_config
    )
    trainer = Trainer(config)  # fails on a bad setting before a run directory exists
    run_dir = None
    if logdir is not None:
        run_dir = trainer.run_dir = _new_run_dir(Path(logdir), config, run_name)
        _write_config(run_dir, config)
    try:
        rows = trainer.run(progress=progress, callback=callback)
    finally:
        trainer.close()
    return TrainResult(trainer.algorithm, rows, run_dir)


def _write_config(run_dir: Path, config: RunConfig) -> None:
    """Write ``config.yaml`` atomically (a resume may rewrite it), every setting spelled out, so
    that a run resumed after a default changed still runs with the settings it started with."""
    path = run_dir / "config.yaml"
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(config.resolved(), sort_keys=False))
    os.replace(tmp, path)


def _run_checkpoint(run_dir: Path) -> Path:
    """The latest checkpoint of the run in ``run_dir``; ``FileNotFoundError`` when it has none."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; was the run started with a logdir?")
    return path


def load_trainer(run_dir: str | Path, config: RunConfig | None = None) -> Trainer:
    """Rebuild a run's trainer from its latest checkpoint and ``config`` (default: the run's
    ``config.yaml``)."""
    run_dir = Path(run_dir)
    path = _run_checkpoint(run_dir)
    if config is None:
        config = load_run_config(run_dir / "config.yaml")
    state = load_checkpoint(path, map_location=config.train.device)
    trainer = Trainer(config, run_dir)
    trainer.load_state_dict(state)
    return trainer


def load_algorithm(checkpoint: str | Path, device: str | None = None) -> Algorithm:
    """Rebuild a trained algorithm (networks, normalizers, optimizers) from a checkpoint file
    alone: the checkpoint carries its run configuration, and the observation and action sizes
    are those of its networks, so no environment is built."""
    state = load_checkpoint(checkpoint, map_location=device or "cpu")
    config = RunConfig.from_dict(state["config"])
    if device is not None:
        config.train.device = device
    _check_device(config.train.device)
    networks = state["algorithm"]
    algorithm = get_algorithm(config.algo)(
        config.algorithm_config(),
        obs_dim=int(networks["obs_rms"]["mean"].shape[0]),
        action_dim=int(networks["actor"]["mu.weight"].shape[0]),
        seed=config.train.seed,
        device=config.train.device,
        dtype=getattr(torch, config.train.dtype),
    )
    algorithm.load_state_dict(networks)
    return algorithm


def changed_settings(old: RunConfig, new: RunConfig) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` of every resolved setting that differs."""
    sections = {
        "train": (dataclasses.asdict(old.train), dataclasses.asdict(new.train)),
        "hyperparameters": (
            dataclasses.asdict(old.algorithm_config()),
            dataclasses.asdict(new.algorithm_config()),
        ),
        "task_kwargs": (old.task_kwargs, new.task_kwargs),
    }
    return [
        (f"{section}.{name}", before.get(name), after.get(name))
        for section, (before, after) in sections.items()
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    ]


def _resumed_config(
    config: RunConfig, run_dir: Path, epochs: int | None, overrides: list[str]
) -> RunConfig:
    """``config`` (the run's) with ``epochs`` and ``overrides`` applied; ``ValueError`` names the
    first changed setting that is not in :data:`RESUMABLE_SETTINGS`."""
    items = ([] if epochs is None else [f"train.epochs={epochs}"]) + overrides
    if not items:
        return config
    changed = RunConfig.from_dict(apply_overrides(config.to_dict(), items))
    for key, before, after in changed_settings(config, changed):
        if key not in RESUMABLE_SETTINGS:
            raise ValueError(
                f"{key} cannot change when resuming {run_dir} (the run has {before!r}, asked "
                f"{after!r}): its checkpoint belongs to the old value; start a new run instead. "
                f"A resume may change only {', '.join(RESUMABLE_SETTINGS)}"
            )
    return changed


def resume(
    run_dir: str | Path,
    progress: bool = True,
    callback: Callable[[dict[str, float]], None] | None = None,
    stop_after: int | None = None,
    epochs: int | None = None,
    overrides: list[str] | None = None,
) -> TrainResult:
    """Continue a run from its latest checkpoint; rows logged after it are replaced.

    With neither ``epochs`` nor ``overrides`` an interrupted run continues to its
    ``train.epochs`` and reproduces the uninterrupted run exactly.

    Args:
        run_dir: the run directory (``config.yaml`` and ``checkpoints/checkpoint.pt``).
        progress: show a progress bar.
        callback: called with every epoch's metrics row.
        stop_after: train at most this many epochs in this call.
        epochs: train up to this many epochs in all (not this many more); a count above the
            run's ``train.epochs`` extends it, finished or not, and may not be below the epochs
            already trained. Caveat: linear learning-rate schedules (``lr_schedule`` or
            ``critic_lr_schedule`` ``"linear"``) decay over the total, so a new total changes
            the rates of the remaining epochs: an extended run does not match a run started
            with the larger count.
        overrides: ``"key=value"`` strings as for :func:`train`. Only
            :data:`RESUMABLE_SETTINGS` may change; a different value for any other setting
            raises ``ValueError`` naming it (the same value is accepted).

    A changed configuration is written to the run's ``config.yaml`` before training, and
    travels in the checkpoints from then on.
    """
    run_dir = Path(run_dir)
    original = load_run_config(run_dir / "config.yaml")
    config = _resumed_config(original, run_dir, epochs, list(overrides or []))
    trainer = load_trainer(run_dir, config)
    if trainer.epoch > config.train.epochs:
        raise ValueError(
            f"train.epochs={config.train.epochs} is below the {trainer.epoch} "
            f"epochs {run_dir} has already trained"
        )
    if config != original:
        _write_config(run_dir, config)
    trainer._truncate_log()
    try:
        rows = trainer.run(progress=progress, callback=callback, stop_after=stop_after)
    finally:
        trainer.close()
    return TrainResult(trainer.algorithm, rows, trainer.run_dir)


@torch.no_grad()
def evaluate(run_dir: str | Path, episodes: int | None = None, seed: int = 0) -> dict[str, float]:
    """Returns of the latest checkpoint's policy: deterministic (mean action) and stochastic.

    Runs one episode in each of ``episodes`` worlds (>= 1; default: the run's ``num_envs``) per
    mode. Returns ``{"deterministic_mean", "deterministic_std", "stochastic_mean",
    "stochastic_std", "episodes"}``.
    """
    if episodes is not None and (isinstance(episodes, bool) or episodes < 1):
        raise ValueError(f"episodes={episodes!r} is invalid; valid range: >= 1")
    run_dir = Path(run_dir)
    algorithm = load_algorithm(_run_checkpoint(run_dir))
    config = load_run_config(run_dir / "config.yaml")
    settings = config.train
    num = settings.num_envs if episodes is None else episodes
    env = make_task(
        config.task, num, settings.device, getattr(torch, settings.dtype), **config.task_kwargs
    )
    generator = torch.Generator(device=algorithm.device).manual_seed(seed)
    result: dict[str, float] = {"episodes": float(num)}
    for mode in ("deterministic", "stochastic"):
        returns = episode_returns(
            env,
            partial(algorithm.act, deterministic=mode == "deterministic", generator=generator),
            seed,
        )
        result[f"{mode}_mean"] = float(returns.mean())
        result[f"{mode}_std"] = float(returns.std()) if num > 1 else 0.0
    return result
