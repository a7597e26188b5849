"""Sweeps killed twice and restarted end exactly as an uninterrupted sweep (issue 17's target).

A sweep of 12 function-optimization runs (De Jong 1-D and 64-D and Ackley 1-D, GI-PPO and PPO,
seeds 1 and 2) runs once uninterrupted with the local pool: the reference. Then the same sweep
(``difftraffic-rl sweep --resume``) is started, its driver killed with SIGKILL at a random moment
once enough epochs are logged, restarted, killed again, and restarted to the end: once with the
local process pool, once through ``--address`` on a Ray cluster started here (``ray start
--head``, 2 CPUs). Every run's ``progress.csv`` must equal the reference's, row for row, in every
column but the timings, and hold each epoch once.

Usage::

    python benchmarks/sweep_resume.py                # about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from checkpoint_cost import replace_section
from reliability import logged_rows

from difftraffic_rl import sweep

TASKS = ["dejong", "dejong64", "ackley"]
ALGOS = ["gippo", "ppo"]
SEEDS = [1, 2]
RAY = Path(sys.executable).with_name("ray")


def _command(logdir: Path, epochs: int, scheduler: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "difftraffic_rl",
        "sweep",
        "--tasks",
        *TASKS,
        "--algos",
        *ALGOS,
        "--seeds",
        *map(str, SEEDS),
        "--epochs",
        str(epochs),
        "--logdir",
        str(logdir),
        "--resume",
        "--workers",
        "2",
        "--no-progress",
        *scheduler,
    ]


def _run_dirs(logdir: Path) -> list[Path]:
    return [
        logdir / sweep.run_name(task, algo, seed)
        for task in TASKS
        for algo in ALGOS
        for seed in SEEDS
    ]


def _logged_epochs(logdir: Path) -> int:
    total = 0
    for run_dir in _run_dirs(logdir):
        progress = run_dir / "progress.csv"
        if progress.exists():
            total += max(len(progress.read_text().splitlines()) - 1, 0)
    return total


def _finished(logdir: Path, epochs: int) -> int:
    logs = [d for d in _run_dirs(logdir) if (d / "progress.csv").exists()]
    return sum(len(logged_rows(d)) == epochs for d in logs)


def interrupted_sweep(
    logdir: Path, epochs: int, scheduler: list[str], kills: int, rng: random.Random
) -> list[str]:
    """Run the sweep, SIGKILL its driver ``kills`` times at random points, finish it; return
    what each kill found ("epochs logged / runs finished")."""
    total = len(_run_dirs(logdir)) * epochs
    # one kill in each of ``kills`` equal stretches of the first 80 % of the sweep
    marks = [total * 0.8 * (k + rng.random()) / kills for k in range(kills)]
    seen = []
    for mark in marks:
        driver = subprocess.Popen(
            _command(logdir, epochs, scheduler),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while driver.poll() is None and _logged_epochs(logdir) < mark:
            time.sleep(0.1)
        if driver.poll() is not None:
            raise SystemExit(
                f"the sweep ended (status {driver.returncode}) before its kill at {mark:.0f} "
                f"epochs: {' '.join(_command(logdir, epochs, scheduler))}"
            )
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        seen.append(f"{_logged_epochs(logdir)} / {_finished(logdir, epochs)}")
        time.sleep(2.0)  # a cluster reaps the dead driver's tasks; pool workers end with it
    subprocess.run(_command(logdir, epochs, scheduler), check=True, capture_output=True)
    return seen


def _compare(reference: Path, logdir: Path) -> tuple[int, int]:
    """Runs equal to the reference, and runs whose epochs are logged once each, in order."""
    equal = once = 0
    for ref_dir, run_dir in zip(_run_dirs(reference), _run_dirs(logdir), strict=True):
        rows = logged_rows(run_dir)
        equal += rows == logged_rows(ref_dir)
        once += [int(float(r["epoch"])) for r in rows] == list(range(1, len(rows) + 1))
    return equal, once


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=40, help="epochs per run")
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    parser.add_argument("--out", type=Path, default=Path("docs/results/sweep_resume.md"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference"
        subprocess.run(
            _command(reference, args.epochs, ["--scheduler", "local"]),
            check=True,
            capture_output=True,
        )
        port = _free_port()
        subprocess.run(
            [str(RAY), "start", "--head", f"--port={port}", "--num-cpus=2"]
            + ["--include-dashboard=false"],
            check=True,
            capture_output=True,
            env={**os.environ, "RAY_worker_niceness": "0"},  # as the embedded instance
        )
        try:
            for mode, scheduler in (
                ("local pool", ["--scheduler", "local"]),
                ("Ray cluster (--address)", ["--address", f"127.0.0.1:{port}"]),
            ):
                logdir = Path(tmp) / mode.split()[0].lower()
                seen = interrupted_sweep(logdir, args.epochs, scheduler, args.kills, rng)
                equal, once = _compare(reference, logdir)
                runs = len(_run_dirs(logdir))
                rows.append([mode, str(args.kills), "; ".join(seen), f"{once} / {runs}"])
                rows[-1].append(f"{equal} / {runs}")
                print(" | ".join(rows[-1]), flush=True)
        finally:
            subprocess.run([str(RAY), "stop", "--force"], capture_output=True)
    table = sweep.markdown_table(
        [
            "scheduler",
            "kills",
            "at each kill: epochs logged / runs finished",
            "runs with each epoch once",
            "runs equal to the uninterrupted sweep",
        ],
        rows,
    )
    text = "\n".join(
        [
            "## Killed twice, resumed",
            "",
            f"Measured by `python benchmarks/sweep_resume.py` at commit "
            f"`{sweep.source_commit()}` on {time.strftime('%Y-%m-%d')} (2 cores).",
            "",
            f"{len(_run_dirs(Path()))} runs ({', '.join(TASKS)} x {', '.join(ALGOS)} x seeds "
            f"{', '.join(map(str, SEEDS))}, {args.epochs} epochs, 2 workers). The sweep's driver "
            "is killed with SIGKILL at random moments, restarted with `--resume` each time and "
            "run to the end; every run's log is compared with an uninterrupted sweep's, every "
            "column but the timings.",
            "",
            table,
        ]
    )
    out = args.out
    page = out.read_text() if out.exists() else "# Sweeps that survive their driver\n"
    out.write_text(replace_section(page, text))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
