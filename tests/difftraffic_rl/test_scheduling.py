"""Sweeps on Ray (embedded and on a real local cluster) and on the local pool: results, failures,
and a driver killed mid-way then resumed."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from difftraffic_rl.scheduling import SweepProgress, latest_row, make_executor
from difftraffic_rl.sweep import SweepError, run_name, run_sweep

pytest.importorskip("ray")

RAY = Path(sys.executable).with_name("ray")


def _epochs(run_dir: Path) -> list[int]:
    with (run_dir / "progress.csv").open() as handle:
        return [int(float(row["epoch"])) for row in csv.DictReader(handle)]


def _failing_sweep(logdir: Path, scheduler: str) -> SweepError:
    # alpha0 is a GI-PPO setting: the PPO run rejects it, the GI-PPO run trains with it
    with pytest.raises(SweepError) as raised:
        run_sweep(
            ["dejong"],
            ["gippo", "ppo"],
            [1],
            epochs=3,
            logdir=logdir,
            workers=2,
            overrides=["alpha0=1e-3"],
            resume=True,
            scheduler=scheduler,
            progress=False,
        )
    return raised.value


def test_a_failed_run_is_reported_the_others_finish_and_ray_matches_the_local_pool(
    tmp_path: Path,
) -> None:
    errors = {s: _failing_sweep(tmp_path / s, s) for s in ("ray", "local")}  # ray: the default
    for scheduler, error in errors.items():
        assert list(error.failures) == ["dejong_ppo_s1"]
        assert "ValueError" in error.failures["dejong_ppo_s1"]
        assert "alpha0" in error.failures["dejong_ppo_s1"]
        assert error.run_dirs == [tmp_path / scheduler / "dejong_gippo_s1"]
        assert _epochs(error.run_dirs[0]) == [1, 2, 3]
        assert str(error).startswith("1 of 2 runs failed\ndejong_ppo_s1: ValueError")
    logs = [_rewards(errors[s].run_dirs[0]) for s in ("ray", "local")]
    assert logs[0] == logs[1]  # the same training wherever it ran


def _rewards(run_dir: Path) -> list[str]:
    with (run_dir / "progress.csv").open() as handle:
        return [row["reward_smoothed"] for row in csv.DictReader(handle)]


def test_a_cuda_sweep_on_ray_must_declare_its_gpus(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"train.device=cuda needs gpus_per_run > 0"):
        run_sweep(["dejong"], ["ppo"], [1], 2, tmp_path, overrides=["train.device=cuda"])


def test_an_address_needs_the_ray_scheduler() -> None:
    with pytest.raises(ValueError, match="address='auto' needs scheduler='ray'"):
        make_executor("local", 2, address="auto")
    with pytest.raises(ValueError, match="scheduler='slurm' is invalid"):
        make_executor("slurm", 2)
    with pytest.raises(ValueError, match="workers=0 is invalid"):
        make_executor("local", 0)


def test_the_progress_display_counts_runs_by_state(tmp_path: Path) -> None:
    runs = [tmp_path / name for name in ("a", "b", "c")]
    progress = SweepProgress(["a", "b", "c"], runs, show=False)
    assert progress.counts() == {"done": 0, "running": 0, "queued": 3, "failed": 0}
    runs[0].mkdir()
    (runs[0] / "progress.csv").write_text("epoch,reward_smoothed\n1.0,-3.5\n2.0,-2.5\n")
    progress.refresh()
    assert progress.counts() == {"done": 0, "running": 1, "queued": 2, "failed": 0}
    assert latest_row(runs[0]) == {"epoch": "2.0", "reward_smoothed": "-2.5"}
    progress.finished(0)
    progress.finished(1, "ValueError: bad")
    assert progress.counts() == {"done": 1, "running": 0, "queued": 1, "failed": 1}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def ray_cluster(tmp_path: Path):
    """A real single-node cluster (``ray start --head``, 2 CPUs); its address.

    ``ray start`` runs in a process group of its own, which its daemons (gcs, raylet) keep, and
    the cluster is stopped by killing that group: ``ray stop`` would kill the Ray processes of
    every cluster on the machine, a sweep the user runs beside the tests included."""
    port = _free_port()
    env = {**os.environ, "RAY_worker_niceness": "0"}
    head = subprocess.Popen(
        [
            str(RAY),
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        assert head.wait(timeout=180) == 0, "ray start --head failed"
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):  # nothing left of the group
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()


def _sweep_command(logdir: Path, address: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "difftraffic_rl",
        "sweep",
        "--tasks",
        "dejong",
        "--algos",
        "ppo",
        "gippo",
        "--seeds",
        "1",
        "--epochs",
        "40",
        "--logdir",
        str(logdir),
        "--resume",
        "--address",
        address,
        "--no-progress",
    ]


def test_a_sweep_on_a_cluster_survives_its_driver_being_killed(
    tmp_path: Path, ray_cluster: str
) -> None:
    logdir = tmp_path / "runs"
    names = [run_name("dejong", algo, 1) for algo in ("ppo", "gippo")]
    driver = subprocess.Popen(
        _sweep_command(logdir, ray_cluster), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        # kill once both runs are under way: a checkpoint written, the last epoch not reached
        epochs = [
            _epochs(logdir / n)[-1] if (logdir / n / "progress.csv").exists() else 0 for n in names
        ]
        if all(3 <= e < 30 for e in epochs):
            break
        time.sleep(0.2)
    assert driver.poll() is None, "the sweep ended before it could be interrupted"
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)
    time.sleep(2.0)  # the cluster reaps the dead driver's tasks
    interrupted = {n: _epochs(logdir / n)[-1] for n in names}
    assert all(e < 40 for e in interrupted.values())

    resumed = subprocess.run(
        _sweep_command(logdir, ray_cluster), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    for name in names:
        # each epoch logged once, in order: the run went on from its checkpoint
        assert _epochs(logdir / name) == list(range(1, 41))
    table = [line for line in resumed.stdout.splitlines() if line.startswith("| dejong |")]
    assert [line.split(" | ")[1:3] for line in table] == [["gippo", "1"], ["ppo", "1"]]


_ORPHAN_DRIVER = """
import multiprocessing, sys, time
from pathlib import Path
from difftraffic_rl.scheduling import LocalExecutor

executor = LocalExecutor(1)
executor.submit(time.sleep, 120)
time.sleep(2)
Path(sys.argv[1]).write_text(str(multiprocessing.active_children()[0].pid))
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Running (a zombie left for the container's init to reap counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_the_local_pool_ends_with_a_killed_driver(tmp_path: Path) -> None:
    # A kill -9 of the sweep's driver must not leave its runs training on, unattended, while
    # the restarted sweep resumes the same run directories.
    pid_file = tmp_path / "worker.pid"
    driver = subprocess.Popen([sys.executable, "-c", _ORPHAN_DRIVER, str(pid_file)])
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    worker = int(pid_file.read_text())
    assert _alive(worker)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=10)
    deadline = time.monotonic() + 5
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker)


def test_a_run_being_trained_elsewhere_is_not_resumed_twice(tmp_path: Path) -> None:
    from difftraffic_rl.sweep import _run_lock

    run_dir = tmp_path / "dejong_gippo_s1"
    busy = pytest.raises(RuntimeError, match="dejong_gippo_s1.*another process")
    with _run_lock(run_dir), busy, _run_lock(run_dir, timeout=0.3):
        pass
    with _run_lock(run_dir, timeout=0.3):  # released: free again
        pass
