"""The lane-drop bottleneck: outflow against inflow, and the capacity drop.

(Not named ``bottleneck.py``: run as a script, this folder is first on ``sys.path`` and the name
would hide the ``bottleneck`` package that pandas imports.)

Runs :func:`difftraffic.scenarios.bottleneck.run_bottleneck` (2 lanes merging into 1 at 1 km,
IDM drivers with MOBIL lane changes) with one demand per world, all worlds in one batch, and
reports per world the inflow served, the outflow and the queue over the last ``--window``
seconds, then the capacity drop: the highest outflow of any demand against the mean outflow of
the demands above it (the queue's discharge). Writes ``docs/results/lane_drop.md`` and
``docs/results/lane_drop.png``.

Usage::

    python benchmarks/lane_drop.py      # demands 1000-3600 veh/h, 30 min each
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from difftraffic.scenarios.bottleneck import BottleneckConfig, BottleneckResult, run_bottleneck
from difftraffic_rl import sweep


def capacity_drop(result: BottleneckResult) -> tuple[float, float, float]:
    """``(peak outflow, its demand, mean outflow of the higher demands)`` in veh/h, over the
    measuring window: the flow the drop carries at best, and what it discharges once the demand
    exceeds that (nan where no demand is higher)."""
    peak = int(result.outflow.argmax())
    above = result.demand > result.demand[peak]
    beyond = result.outflow[above].mean() if bool(above.any()) else torch.tensor(float("nan"))
    return float(result.outflow[peak]), float(result.demand[peak]), float(beyond)


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
    parser.add_argument("--out", type=Path, default=Path("docs/results/lane_drop.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = BottleneckConfig()
    demand = torch.tensor(args.demands, dtype=torch.float64)
    generator = torch.Generator().manual_seed(args.seed)
    result = run_bottleneck(config, demand, args.seconds, args.window, generator)
    peak, peak_demand, discharge = capacity_drop(result)
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
                f"python benchmarks/lane_drop.py --seconds {args.seconds:g} "
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
            f"The drop carries at most **{peak:.0f} veh/h** (at a demand of "
            f"{peak_demand:.0f} veh/h); at every higher demand the queue upstream of it "
            f"discharges **{discharge:.0f} veh/h** on average, {100 * (1 - discharge / peak):.1f} "
            "% less: the capacity drop. The queue column counts cars slower than 5 m/s upstream "
            "of the drop; at low demands these are the few cars that stop at the lane's end to "
            "wait for a gap.",
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
