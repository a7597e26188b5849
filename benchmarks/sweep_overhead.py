"""What scheduling a sweep on Ray costs against the local process pool, measured side by side.

Runs the same sweep of 8 function-optimization runs (De Jong and Ackley, 1-D and 64-D, GI-PPO and
PPO, seed 1) with ``--scheduler ray`` (embedded Ray, started and stopped inside the timing) and
``--scheduler local``, alternating which goes first, each into a fresh log directory, and reports
every sweep's wall time and Ray's overhead: the median of Ray's times over the median of the
pool's, minus one. Both schedulers run the identical training (the runs' logs are compared), so
the difference is scheduling: starting Ray, shipping tasks, polling.

Usage::

    python benchmarks/sweep_overhead.py --repeats 2   # the paper's 2000 epochs, about 45 min
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from difftraffic_rl import sweep

TASKS = ["dejong", "dejong64", "ackley", "ackley64"]
ALGOS = ["gippo", "ppo"]


def timed_sweep(scheduler: str, epochs: int | None, workers: int) -> tuple[float, list[str]]:
    """Wall seconds of one sweep and its runs' logged rewards (to check both did the same)."""
    with tempfile.TemporaryDirectory() as logdir:
        start = time.perf_counter()
        run_dirs = sweep.run_sweep(
            TASKS,
            ALGOS,
            [1],
            epochs,
            logdir,
            workers,
            overrides=["train.tensorboard=false"],
            resume=True,
            scheduler=scheduler,
            progress=False,
        )
        seconds = time.perf_counter() - start
        finals = [f"{r.final!r}" for r in sweep.run_summaries(run_dirs)]
    return seconds, finals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, help="epochs per run (default: the paper's 2000)")
    parser.add_argument("--repeats", type=int, default=2, help="sweeps per scheduler")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/results/sweep_overhead.md"))
    args = parser.parse_args()
    times: dict[str, list[float]] = {"ray": [], "local": []}
    loads: list[str] = []
    finals: dict[str, list[str]] = {}
    for repeat in range(args.repeats):
        order = ("ray", "local") if repeat % 2 == 0 else ("local", "ray")
        for scheduler in order:
            loads.append(f"{os.getloadavg()[0]:.1f}")
            seconds, finals[scheduler] = timed_sweep(scheduler, args.epochs, args.workers)
            times[scheduler].append(seconds)
            print(f"{scheduler:5s} sweep {repeat + 1}: {seconds:.1f} s", flush=True)
    if finals["ray"] != finals["local"]:
        raise SystemExit("the two schedulers trained different runs: the comparison is void")
    ray, local = (statistics.median(times[s]) for s in ("ray", "local"))
    epochs = args.epochs if args.epochs is not None else "the configurations' (2000)"
    table = sweep.markdown_table(
        ["scheduler", "sweep wall times (s)", "median (s)"],
        [
            [s, " / ".join(f"{t:.1f}" for t in times[s]), f"{statistics.median(times[s]):.1f}"]
            for s in ("ray", "local")
        ],
    )
    text = "\n".join(
        [
            *sweep.report_preamble(
                "Sweep scheduling overhead: Ray against the local process pool",
                "python benchmarks/sweep_overhead.py"
                + (f" --epochs {args.epochs}" if args.epochs is not None else "")
                + f" --repeats {args.repeats}",
                f"8 runs ({', '.join(TASKS)} x {', '.join(ALGOS)}, seed 1), {epochs} epochs, "
                f"{args.workers} workers, one torch thread per run; schedulers alternated",
            ),
            table,
            f"**Ray's overhead: {100 * (ray / local - 1):+.1f} %** of the pool's sweep time "
            "(medians; embedded Ray started and stopped inside the timing). Both schedulers "
            "trained identical runs (final rewards compared bit for bit). Load average (1 min) "
            f"before each sweep, in run order: {', '.join(loads)}"
            + (
                f"; above the {args.workers} workers' own, other jobs shared the cores and the "
                "ratio is noise-bound."
                if max(map(float, loads)) > args.workers + 0.5
                else " (the sweeps' own: the machine was otherwise quiet)."
            ),
            "",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
