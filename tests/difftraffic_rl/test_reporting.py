"""rliable-based reports: IQM intervals, probability of improvement, normalization, the report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from difftraffic_rl.reporting import (
    iqm_interval,
    normalized_scores,
    probability_of_improvement,
    report_markdown,
    write_report,
)
from difftraffic_rl.sweep import RunSummary, format_iqm

FEW = 200
"""Bootstrap resamples in these tests: enough for the properties checked, and fast."""


def test_the_iqm_drops_the_outer_quarters() -> None:
    # five seeds: the lowest and the highest go, the middle three are averaged
    iqm, _, _ = iqm_interval([67.0, 930.0, 934.0, 940.0, 1000.0], reps=FEW)
    assert iqm == pytest.approx((930 + 934 + 940) / 3)
    assert iqm_interval([1.0, 2.0, 3.0], reps=FEW)[0] == pytest.approx(
        2.0
    )  # fewer than four: all kept
    assert iqm_interval([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0], reps=FEW)[0] == pytest.approx(
        3.5
    )


def test_the_iqm_interval_contains_the_iqm_and_is_reproducible() -> None:
    values = [67.0, 930.0, 934.0, 940.0, 1000.0]
    iqm, low, high = iqm_interval(values, reps=FEW)
    assert 67.0 <= low < iqm < high <= 1000.0
    assert iqm_interval(values, reps=FEW) == (iqm, low, high)
    assert iqm_interval(values, seed=1, reps=FEW) != (iqm, low, high)
    assert iqm_interval([5.0, 5.0, 5.0], reps=FEW) == (5.0, 5.0, 5.0)
    assert all(math.isnan(v) for v in iqm_interval([math.nan], reps=FEW))
    full = iqm_interval(values)  # the default resample count, as format_iqm uses
    assert format_iqm(values, ".1f") == f"{full[0]:.1f} [{full[1]:.1f}, {full[2]:.1f}]"
    assert format_iqm([math.nan]) == "n/a"


def test_probability_of_improvement_counts_pairs_and_ties() -> None:
    better = np.array([[3.0, 10.0], [4.0, 11.0]])
    worse = np.array([[1.0, 5.0], [2.0, 6.0], [0.0, 7.0]])
    assert probability_of_improvement(better, worse, reps=FEW) == (1.0, 1.0, 1.0)
    assert probability_of_improvement(worse, better, reps=FEW) == (0.0, 0.0, 0.0)
    p, low, high = probability_of_improvement(better, better, reps=FEW)
    assert p == pytest.approx(0.5) and low <= 0.5 <= high
    # one task each way: X wins task 0 with every pair, loses task 1 with every pair
    mixed = np.array([[3.0, 0.0], [4.0, 0.0]])
    assert probability_of_improvement(mixed, np.array([[1.0, 5.0]]), reps=FEW)[0] == pytest.approx(
        0.5
    )
    with pytest.raises(ValueError, match="same tasks"):
        probability_of_improvement(better, np.ones((2, 3)))


def test_scores_are_normalized_per_task_over_every_algorithm() -> None:
    scores = {
        ("a", "gippo"): [10.0, 20.0],
        ("a", "ppo"): [0.0],
        ("b", "gippo"): [-1.0],
        ("b", "ppo"): [-3.0, -2.0],
        ("c", "ppo"): [7.0, 7.0],
    }
    normalized = normalized_scores(scores, ["a", "b", "c"])
    assert normalized[("a", "gippo")] == [0.5, 1.0]
    assert normalized[("a", "ppo")] == [0.0]
    assert normalized[("b", "ppo")] == [0.0, 0.5]
    assert normalized[("c", "ppo")] == [1.0, 1.0]


def _run(task: str, algo: str, seed: int, final: float, best: float) -> RunSummary:
    return RunSummary(task, algo, seed, 10, final, best, 0.1, Path(f"/runs/{task}_{algo}"), {})


RUNS = [
    _run(task, algo, seed, final=base + seed + (5.0 if algo == "gippo" else 0.0), best=100.0)
    for task, base in (("dejong", -20.0), ("ackley", -50.0))
    for algo in ("ppo", "gippo")
    for seed in (1, 2, 3)
]


def test_the_report_gives_intervals_and_the_reference_algorithms_lead() -> None:
    text = report_markdown(RUNS, measure="final", reps=FEW)
    lines = text.splitlines()
    # reference first within each task, IQM of seeds 1-3 = the middle one (seed 2)
    assert "| ackley | GI-PPO | 3 | -43 ± 1 | -43 [" in text
    assert "| dejong | PPO | 3 | -18 ± 1 | -18 [" in text
    poi = next(line for line in lines if line.startswith("| GI-PPO > PPO |"))
    assert poi.startswith("| GI-PPO > PPO | 2 | 1 [1, 1] |")  # every GI-PPO run above every PPO run
    assert any(line.startswith("| GI-PPO | ") for line in lines[lines.index(poi) :])
    best = report_markdown(RUNS, measure="best", reps=FEW)
    assert "| GI-PPO > PPO | 2 | 0.5 [0.5, 0.5] |" in best  # all tied at 100
    with pytest.raises(ValueError, match="measure='last' is invalid"):
        report_markdown(RUNS, measure="last")
    with pytest.raises(ValueError, match="no runs"):
        report_markdown([])


def test_write_report_plots_the_performance_profiles(tmp_path: Path) -> None:
    out = write_report(RUNS, tmp_path / "r" / "report.md", title="T", reps=FEW)
    text = out.read_text()
    assert text.startswith("# T\n")
    image = tmp_path / "r" / "report_profiles.png"
    assert image.stat().st_size > 10_000
    assert "](report_profiles.png)" in text
    assert write_report(
        RUNS, tmp_path / "again.md", title="T", reps=FEW
    ).read_text() == text.replace("report_profiles.png", "again_profiles.png")
