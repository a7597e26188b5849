"""Where a sweep's runs execute, and the live display of how far they are.

Two executors behind one small interface (:class:`Executor`): :class:`RayExecutor` schedules
every run as a Ray task that declares the CPUs and GPUs it needs, on a Ray instance started
embedded in this process (no address: nothing to set up) or on an existing cluster
(``address="auto"``, ``"ray://host:port"``); :class:`LocalExecutor` runs them in a local process
pool, with no Ray at all. Either way a run writes an ordinary run directory, so a cluster needs the
sweep's ``logdir`` on storage every node sees.

:class:`SweepProgress` draws one progress bar for the whole sweep: runs done, running, queued and
failed, the latest smoothed reward of the runs in progress, and one line per finished run.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "SweepProgress",
    "add_scheduler_arguments",
    "latest_row",
    "make_executor",
]

SCHEDULERS = ("ray", "local")
"""Names accepted by :func:`make_executor`."""


class Executor(Protocol):
    """Runs ``fn(*args)`` calls somewhere; handles are opaque."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def wait(self, handles: Sequence[Any], timeout: float) -> set[Any]:
        """The handles of ``handles`` that have finished (successfully or not), waiting at most
        ``timeout`` seconds for the first one."""
        ...

    def result(self, handle: Any) -> Any:
        """The call's return value; raises :class:`RunFailedError` with the run's error."""
        ...

    def close(self) -> None: ...


class RunFailedError(Exception):
    """A run raised: ``str(error)`` is its exception's type and message, one line."""


def _one_line(error: BaseException) -> str:
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[-1] if message else ''}".rstrip(": ")


def _exit_with_parent(parent: int) -> None:
    """Pool-worker initializer: end this process within a second of the sweep's driver dying
    (a ``kill -9`` of the driver would otherwise leave its runs training unattended, writing to
    run directories that the restarted sweep resumes)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class LocalExecutor:
    """A pool of ``workers`` spawned processes on this machine, which end with this process."""

    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        )

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        return self._pool.submit(fn, *args)

    def wait(self, handles: Sequence[Future[Any]], timeout: float) -> set[Future[Any]]:
        done, _ = wait_futures(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return set(done)

    def result(self, handle: Future[Any]) -> Any:
        try:
            return handle.result()
        except Exception as error:  # the run's own error, re-raised in this process
            raise RunFailedError(_one_line(error)) from error

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _use_ray_token_if_present() -> None:
    """Connect to a cluster with Ray's token authentication when this machine has a token.

    Ray (2.59 and later) starts a cluster with ``ray start`` in token mode whenever a token
    exists (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``), but a client
    joins in token mode only when ``RAY_AUTH_MODE=token`` is set, and is refused otherwise. An
    explicit ``RAY_AUTH_MODE`` is left as the user set it; older Rays ignore the variable. Ray
    reads it when first imported: a program that imported Ray before sets it itself.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


class RayExecutor:
    """Ray tasks of ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs each.

    Args:
        address: ``None`` starts Ray embedded with ``workers`` CPUs; ``"auto"`` joins the cluster
            this machine belongs to (``ray start --head``), ``"ray://host:port"`` a remote one.
        workers: CPUs of the embedded instance (ignored with an address: the cluster's own).
    """

    def __init__(
        self,
        address: str | None,
        workers: int,
        cpus_per_run: float = 1.0,
        gpus_per_run: float = 0.0,
    ) -> None:
        if address is not None:
            _use_ray_token_if_present()  # before Ray reads its configuration, at import
        try:
            import ray
        except ImportError as error:  # the CLI reports an ImportError in one line
            raise ImportError(
                "the ray scheduler needs Ray: pip install 'difftraffic[rl]' (or use --scheduler "
                "local)"
            ) from error
        self._ray = ray
        self._owns_instance = not ray.is_initialized()
        if self._owns_instance:
            embedded: dict[str, Any] = {
                "num_cpus": workers,
                # Ray renices its workers to 15 by default: on a machine shared with other work
                # they would then crawl (measured 15x slower beside two busy processes).
                "_system_config": {"worker_niceness": 0},
            }
            ray.init(
                # "local": a new instance of our own, never a cluster `ray start` left running
                address="local" if address is None else address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                **(embedded if address is None else {}),
            )
        self._options: dict[str, Any] = {
            "num_cpus": cpus_per_run,
            "num_gpus": gpus_per_run,
            "max_retries": 0,
        }
        self._remote: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(**self._options)(fn)
        return self._remote[fn].remote(*args)

    def wait(self, handles: Sequence[Any], timeout: float) -> set[Any]:
        ready, _ = self._ray.wait(list(handles), num_returns=len(handles), timeout=timeout)
        return set(ready)

    def result(self, handle: Any) -> Any:
        try:
            return self._ray.get(handle)
        except self._ray.exceptions.RayTaskError as error:
            raise RunFailedError(_one_line(error.cause)) from error
        except self._ray.exceptions.RayError as error:  # worker or node died
            raise RunFailedError(_one_line(error)) from error

    def close(self) -> None:
        if self._owns_instance:
            self._ray.shutdown()


def make_executor(
    scheduler: str, workers: int, address: str | None = None, gpus_per_run: float = 0.0
) -> Executor:
    """The executor named ``scheduler`` (``"ray"`` or ``"local"``)."""
    if workers < 1:
        raise ValueError(f"workers={workers} is invalid; valid range: >= 1")
    if scheduler == "ray":
        return RayExecutor(address, workers, gpus_per_run=gpus_per_run)
    if scheduler != "local":
        raise ValueError(f"scheduler={scheduler!r} is invalid; valid values: {list(SCHEDULERS)}")
    if address is not None:
        raise ValueError(f"address={address!r} needs scheduler='ray', not {scheduler!r}")
    if gpus_per_run:
        raise ValueError(f"gpus_per_run={gpus_per_run} needs scheduler='ray'")
    return LocalExecutor(workers)


def add_scheduler_arguments(parser: argparse.ArgumentParser) -> None:
    """``--scheduler``, ``--address``, ``--gpus-per-run`` and ``--no-progress`` of a sweep."""
    parser.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default="ray",
        help="ray (default): each run a Ray task, embedded here or on --address; "
        "local: a process pool on this machine",
    )
    parser.add_argument(
        "--address",
        help="an existing Ray cluster: 'auto' (this machine's, after `ray start --head`) or "
        "ray://host:port; --logdir must be on storage its nodes share",
    )
    parser.add_argument(
        "--gpus-per-run", type=float, default=0.0, help="GPUs each run declares to Ray"
    )
    parser.add_argument("--no-progress", action="store_true", help="no live display")


def latest_row(run_dir: Path) -> dict[str, str] | None:
    """The last row of a run's ``progress.csv`` as a mapping, ``None`` before its first row."""
    try:
        lines = (run_dir / "progress.csv").read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 2:
        return None
    return dict(zip(lines[0].split(","), lines[-1].split(","), strict=False))


@dataclass
class _Entry:
    label: str
    run_dir: Path
    state: str = "queued"


class SweepProgress:
    """One bar over the sweep's runs; ``show=False`` draws nothing and only keeps the counts.

    A run counts as *running* once its run directory has been written since the sweep started
    (a queued run that resumes an earlier one has older files); its latest smoothed reward and
    epoch appear beside the counts.
    """

    def __init__(self, labels: Sequence[str], run_dirs: Sequence[Path], show: bool = True) -> None:
        self.entries = [_Entry(label, Path(d)) for label, d in zip(labels, run_dirs, strict=True)]
        self._started = time.time()
        self._bar = None
        if show:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=len(self.entries), unit="run", desc="sweep", leave=True)

    def counts(self) -> dict[str, int]:
        """``{"done", "running", "queued", "failed"}`` run counts."""
        counts = dict.fromkeys(("done", "running", "queued", "failed"), 0)
        for entry in self.entries:
            counts[entry.state] += 1
        return counts

    def refresh(self) -> None:
        """Re-read the run directories of unfinished runs and redraw."""
        latest = []
        for entry in self.entries:
            if entry.state not in ("queued", "running"):
                continue
            row = latest_row(entry.run_dir)
            if row is not None and self._written_since_start(entry.run_dir):
                entry.state = "running"
                latest.append(f"{entry.label} epoch {_epoch(row)} {_reward(row)}")
        if self._bar is not None:
            counts = self.counts()
            status = ", ".join(
                f"{n} {state}" for state, n in counts.items() if n or state != "failed"
            )
            shown = "; ".join(latest[:3]) + (
                f"; +{len(latest) - 3} more" if len(latest) > 3 else ""
            )
            self._bar.set_postfix_str(f"{status}" + (f" | {shown}" if shown else ""), refresh=True)

    def finished(self, index: int, error: str | None = None) -> None:
        """Mark run ``index`` done (or failed with ``error``) and print its line."""
        entry = self.entries[index]
        entry.state = "failed" if error else "done"
        row = latest_row(entry.run_dir)
        line = (
            f"failed {entry.label}: {error}"
            if error
            else f"done   {entry.label}: "
            + (f"{_reward(row)} after {_epoch(row)} epochs" if row else "no rows logged")
        )
        if self._bar is not None:
            self._bar.write(line)
            self._bar.update(1)
        self.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def _written_since_start(self, run_dir: Path) -> bool:
        try:
            return (run_dir / "progress.csv").stat().st_mtime >= self._started
        except OSError:
            return False


def _epoch(row: dict[str, str]) -> str:
    try:
        return str(int(float(row["epoch"])))
    except (KeyError, ValueError):
        return "?"


def _reward(row: dict[str, str]) -> str:
    value = float(row.get("reward_smoothed", "nan") or "nan")
    return "no episode finished yet" if math.isnan(value) else f"reward {value:.4g}"
