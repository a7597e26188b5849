"""Stop-and-go waves on the Sugiyama ring: do they form, and how fast do they travel?

Simulates :func:`difftraffic.scenarios.ring.ring_scenario` (22 IDM drivers with a small spread
of parameters on a 230 m ring, starting evenly spaced at 7 m/s) in several worlds at once, each
world drawing its own drivers from the seed, and reports per world: when the spread of speeds
first exceeds 1 m/s (the wave has formed), the wave's speed over the last ``--window`` seconds
(negative: upstream) against the ~20 km/h of the experiment, and the mean speed and its spread
at the end against the uniform-flow equilibrium the waves destroy. Writes
``docs/results/ring.md`` and the time-space diagram of world 0, ``docs/results/ring.png``.

Usage::

    python benchmarks/ring.py                       # 5 worlds, 600 s
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from difftraffic import rollout
from difftraffic.scenarios.ring import (
    RingConfig,
    ring_scenario,
    speed_field,
    uniform_flow_speed,
    wave_speed,
)
from difftraffic_rl import sweep

OBSERVED_WAVE_SPEED = -20.0
"""km/h, upstream: the jam's propagation in Sugiyama et al. (2008)."""

FORMED = 1.0
"""Spread of speeds (m/s, standard deviation over the cars) that counts as a formed wave."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worlds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--window", type=float, default=200.0, help="s, wave speed window")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/results/ring.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = RingConfig()
    scenario = ring_scenario(config)
    steps = round(args.seconds / config.dt)
    generator = torch.Generator().manual_seed(args.seed)
    state, drivers = scenario.sample(args.worlds, dtype=torch.float64, generator=generator)
    states, _ = rollout(state, scenario.road, drivers, config.dt, steps, generator=generator)
    field = speed_field(states, config.length)  # [B, T, cells]
    speeds = torch.stack([s.v for s in states], 1)  # [B, T, N]
    spread = speeds.std(-1)
    window = round(args.window / config.dt)
    waves = wave_speed(field[:, -window:], config.length, config.dt) * 3.6
    uniform = uniform_flow_speed(drivers, config.length, config.vehicle_length) * 3.6
    rows = []
    for world in range(args.worlds):
        formed = (spread[world] > FORMED).nonzero()
        rows.append(
            [
                str(world),
                f"{float(formed[0]) * config.dt:.0f}" if len(formed) else "never",
                f"{float(waves[world]):.1f}",
                f"{float(uniform[world]):.1f}",
                f"{float(speeds[world, -window:].mean()) * 3.6:.1f}",
                f"{float(spread[world, -window:].mean()) * 3.6:.1f}",
                f"{float((speeds[world, -window:] < 0.5).float().mean()) * 100:.0f}",
            ]
        )
    plot(field[0], config, args.out.with_suffix(".png"))
    text = "\n".join(
        [
            *sweep.report_preamble(
                "Stop-and-go waves on the Sugiyama ring",
                f"python benchmarks/ring.py --worlds {args.worlds} --seconds {args.seconds:g}",
                f"{config.vehicles} IDM drivers on a {config.length:g} m ring, {args.seconds:g} s "
                f"at {config.dt} s, float64; drivers drawn per world from seed {args.seed}",
            ),
            sweep.markdown_table(
                [
                    "world",
                    f"wave formed (s; speed spread > {FORMED:g} m/s)",
                    f"wave speed, last {args.window:g} s (km/h)",
                    "uniform-flow speed (km/h)",
                    f"mean speed, last {args.window:g} s (km/h)",
                    "speed spread (km/h)",
                    "time stopped (%)",
                ],
                rows,
            ),
            f"Sugiyama et al. (2008) observed the jam travelling upstream at about "
            f"{-OBSERVED_WAVE_SPEED:.0f} km/h; waves here travel at "
            f"{float(waves.median()):.1f} km/h (median over worlds).",
            "",
            f"![time-space diagram of world 0]({args.out.with_suffix('.png').name})",
            "",
        ]
    )
    args.out.write_text(text)
    print(text)


def plot(field: torch.Tensor, config: RingConfig, out: Path) -> None:
    """The time-space diagram: speed (colour) along the ring (y) over time (x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = field.shape[0] * config.dt
    figure, axis = plt.subplots(figsize=(9, 3.6))
    image = axis.imshow(
        field.T * 3.6,
        aspect="auto",
        origin="lower",
        extent=(0.0, seconds, 0.0, config.length),
        cmap="RdYlGn",
        vmin=0.0,
    )
    axis.set_xlabel("time (s)")
    axis.set_ylabel("position on the ring (m)")
    axis.set_title(
        f"{config.vehicles} cars on a {config.length:g} m ring: jams (red) travel upstream"
    )
    figure.colorbar(image, ax=axis, label="speed (km/h)")
    figure.tight_layout()
    figure.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
