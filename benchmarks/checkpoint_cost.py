"""What a checkpoint every epoch costs: save time against epoch time, measured in the same run.

With ``train.checkpoint_every = 1`` (the default) a killed run loses at most the epoch in
progress. For each task this trains a few epochs with the shipped GI-PPO configuration, timing
every epoch's training (:meth:`Trainer.run_epoch`) and every checkpoint write
(:meth:`Trainer.save_checkpoint`) separately, and reports the medians, their ratio and the file
size. Both are timed in the same process on the same machine, so the ratio holds under load.

Usage::

    python benchmarks/checkpoint_cost.py --out docs/reliability.md
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from difftraffic_rl import sweep
from difftraffic_rl.config import RunConfig, default_config
from difftraffic_rl.training import CHECKPOINT, Trainer

TASKS = ("dejong64", "cartpole", "pacecar-2lane", "pacecar-10lane")
SECTION = "## Checkpoint cost"


def measure(task: str, epochs: int) -> dict[str, float]:
    """Median seconds per epoch and per checkpoint save, and the checkpoint's size in bytes."""
    config = RunConfig.from_dict(default_config(task, "gippo"))
    config.train.tensorboard = False
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, Path(run_dir))
        epoch_times, save_times = [], []
        for _ in range(epochs):
            start = time.perf_counter()
            trainer.run_epoch()
            epoch_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            trainer.save_checkpoint()
            save_times.append(time.perf_counter() - start)
        size = (Path(run_dir) / CHECKPOINT).stat().st_size
        trainer.close()
    return {
        "epoch": statistics.median(epoch_times),
        "save": statistics.median(save_times),
        "bytes": float(size),
    }


def report(results: dict[str, dict[str, float]], command: str) -> str:
    """The markdown section for ``docs/reliability.md``."""
    lines = [
        SECTION,
        "",
        f"Measured by `{command}` at commit `{sweep.source_commit()}` on "
        f"{time.strftime('%Y-%m-%d')} (one torch thread; GI-PPO, the shipped configurations; "
        "medians over the epochs run).",
        "",
        "| task | s / epoch | s / checkpoint | checkpoint / epoch | checkpoint size |",
        "|---|---|---|---|---|",
    ]
    for task, r in results.items():
        lines.append(
            f"| {task} | {r['epoch']:.3f} | {r['save'] * 1e3:.1f} ms | "
            f"{100 * r['save'] / r['epoch']:.1f} % | {r['bytes'] / 1e3:.0f} kB |"
        )
    lines += [
        "",
        "`train.checkpoint_every` is 1 by default: a `kill -9` loses at most the epoch in "
        "progress, and `--resume` continues exactly (tested with a real SIGKILL in "
        "`tests/difftraffic_rl/test_training.py`). Each `progress.csv` row is one `write()` on "
        "an append-only descriptor, so a kill leaves no torn line. Runs whose epochs are shorter "
        "than the save can set `--set train.checkpoint_every=N`.",
        "",
    ]
    return "\n".join(lines)


def replace_section(page: str, section: str) -> str:
    """``page`` with the section that starts with ``section``'s first line (a ``## `` heading, up
    to the next one) replaced by ``section``, or ``section`` appended."""
    heading = section.splitlines()[0]
    start = page.find(heading)
    if start < 0:
        return page.rstrip("\n") + "\n\n" + section
    end = page.find("\n## ", start + len(heading))
    rest = "\n" + page[end + 1 :] if end >= 0 else ""
    return page[:start] + section.rstrip("\n") + "\n" + rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--epochs", type=int, default=20, help="epochs timed per task")
    parser.add_argument("--out", default="docs/reliability.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for task in args.tasks:
        results[task] = measure(task, args.epochs)
        print(task, results[task])
    command = f"python benchmarks/checkpoint_cost.py --epochs {args.epochs}"
    out = Path(args.out)
    page = out.read_text() if out.exists() else "# Reliability\n"
    out.write_text(replace_section(page, report(results, command)))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
