"""The lane-drop bottleneck: outflow against inflow, and the capacity drop.

Runs :func:`difftraffic.scenarios.bottleneck.run_bottleneck` (2 lanes merging into 1 at 1 km,
IDM drivers with MOBIL lane changes) with one demand per world, all worlds in one batch, and
reports per world the inflow served, the outflow and the queue over the last ``--window``
seconds. Then, over every world's minute-by-minute record: the *free-flow capacity* (the highest
outflow of any 5-minute stretch without a queue upstream of the drop) against the *queue
discharge rate* (the mean outflow of the minutes with a queue of at least ``QUEUE`` cars): the
capacity drop. Writes ``docs/results/bottleneck.md`` and ``docs/results/bottleneck.png``.

Usage::

    python benchmarks/bottleneck.py      # demands 1000-3600 veh/h, 30 min each
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from difftraffic.scenarios.bottleneck import BottleneckConfig, BottleneckResult, run_bottleneck
from difftraffic_rl import sweep

FREE = 0
"""Cars queued upstream of the drop, at most, for a stretch to count as free flow."""
QUEUE = 20
"""Cars queued, at least, for a minute to count as queue discharge."""
STRETCH = 5
"""Minutes of the free-flow stretches whose mean outflow is compared."""


def capacity_drop(result: BottleneckResult) -> tuple[float, float]:
    """``(free-flow capacity, queue discharge rate)`` in veh/h (see the module docstring); nan
    where no stretch or minute qualifies. The first minute (an empty road filling) is left out."""
    outflow, queue = result.outflow_series[:, 1:], result.queue_series[:, 1:]
    windows = outflow.unfold(1, STRETCH, 1).mean(-1)
    free = (queue.unfold(1, STRETCH, 1) <= FREE).all(-1)
    capacity = windows[free].max() if bool(free.any()) else torch.tensor(float("nan"))
    discharging = queue >= QUEUE
    discharge = (
        outflow[discharging].mean() if bool(discharging.any()) else torch.tensor(float("nan"))
    )
    return float(capacity), float(discharge)


def plot(result: BottleneckResult, out: Path) -> None:
    """Outflow against demand (left) and the record of the highest demand (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (flows, record) = plt.subplots(1, 2, figsize=(10, 3.8))
    flows.plot(result.demand, result.inflow, "o-", label="inflow served")
    flows.plot(result.demand, result.outflow, "s-", label="outflow")
    flows.plot(result.demand, result.demand, ":", color="grey", label="demand")
    flows.set_xlabel("demand (veh/h)")
    flows.set_ylabel("flow over the last window (veh/h)")
    flows.legend()
    minutes = torch.arange(result.outflow_series.shape[1]) + 1
    record.plot(minutes, result.outflow_series[-1], label="outflow (veh/h)")
    record.set_xlabel("minute")
    record.set_ylabel("outflow (veh/h)")
    queue_axis = record.twinx()
    queue_axis.plot(minutes, result.queue_series[-1], color="tab:red", label="queue (cars)")
    queue_axis.set_ylabel("cars queued upstream of the drop", color="tab:red")
    record.set_title(f"demand {float(result.demand[-1]):.0f} veh/h")
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demands", type=float, nargs="+", default=list(range(1000, 3800, 200)))
    parser.add_argument("--seconds", type=float, default=1800.0)
    parser.add_argument("--window", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/results/bottleneck.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = BottleneckConfig()
    demand = torch.tensor(args.demands, dtype=torch.float64)
    generator = torch.Generator().manual_seed(args.seed)
    result = run_bottleneck(config, demand, args.seconds, args.window, generator)
    capacity, discharge = capacity_drop(result)
    rows = [
        [
            f"{float(result.demand[w]):.0f}",
            f"{float(result.inflow[w]):.0f}",
            f"{float(result.outflow[w]):.0f}",
            f"{float(result.queue_series[w, -1]):.0f}",
            f"{float(result.collisions[w]):.0f}",
        ]
        for w in range(len(demand))
    ]
    plot(result, args.out.with_suffix(".png"))
    text = "\n".join(
        [
            *sweep.report_preamble(
                "Lane-drop bottleneck: outflow and the capacity drop",
                f"python benchmarks/bottleneck.py --seconds {args.seconds:g} "
                f"--window {args.window:g} --seed {args.seed}",
                f"{config.lanes} lanes merging into {config.lanes - 1} at {config.drop_at:g} m of "
                f"a {config.length:g} m road, IDM drivers with MOBIL, one world per demand, "
                f"{args.seconds:g} s at {config.dt} s, float64",
            ),
            sweep.markdown_table(
                [
                    "demand (veh/h)",
                    f"inflow served, last {args.window:g} s (veh/h)",
                    "outflow (veh/h)",
                    "queue at the end (cars)",
                    "collision flags",
                ],
                rows,
            ),
            f"Free-flow capacity (the highest {STRETCH}-minute outflow with no car queued "
            f"upstream of the drop): **{capacity:.0f} veh/h**. Queue discharge rate (mean "
            f"outflow of the minutes with {QUEUE} or more cars queued): **{discharge:.0f} "
            f"veh/h**, {100 * (1 - discharge / capacity):.1f} % lower.",
            "",
            f"![outflow against demand, and the record of the highest demand]"
            f"({args.out.with_suffix('.png').name})",
            "",
        ]
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
