"""Smoke run of the traffic learning benchmark: it trains, evaluates and reports every run."""

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "traffic.py"


def test_quick_traffic_benchmark_writes_an_evaluated_table_and_a_plot(tmp_path):
    logdir = tmp_path / "traffic"
    command = [
        sys.executable,
        str(SCRIPT),
        "--quick",
        "--variants",
        "1lane",
        "--algos",
        "ppo",
        "rp",
        "--workers",
        "1",
        "--logdir",
        str(logdir),
        "--lane-membership",
        "center",
        "--soft-lanes",
        "--set",
        "hyperparameters.normalize_value=true",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    out = tmp_path / "traffic_center_soft_quick"
    report = (out / "traffic_center_soft.md").read_text()
    rows = re.findall(
        r"^\| 1lane \| (PPO|RP) \| 1 \| 3 \| \*\*(-?\d+\.\d) ± 0\.0\*\* \| "
        r"(-?\d+) \[(-?\d+), (-?\d+)\] \|",
        report,
        re.MULTILINE,
    )
    assert {row[0] for row in rows} == {"PPO", "RP"}
    # An evaluation return lies between -1 (immediate termination) and 1000 (perfect episode);
    # with one seed the interquartile mean and both ends of its interval are that return.
    for _, value, iqm, low, high in rows:
        assert -1.0 <= float(value) <= 1000.0
        assert float(iqm) == float(low) == float(high) == round(float(value))
    assert "lane membership `center (soft)`" in report
    assert "--quick --set hyperparameters.normalize_value=true" in report
    assert "variants 1lane of 1lane, 2lane, 3lane, 4lane, 10lane" in report
    assert "2 of 2 requested runs finished" in report
    assert (out / "traffic_center_soft.png").stat().st_size > 1000
    run_dirs = list(out.glob("pacecar-1lane_*"))
    assert len(run_dirs) == 2
    for run_dir in run_dirs:
        assert (run_dir / "evaluation.json").exists()
        config = (run_dir / "config.yaml").read_text()
        assert "lane_membership: center" in config
        assert "soft_lanes: true" in config
        assert "normalize_value: true" in config  # --set, against the shipped false


def test_soft_lanes_without_the_centre_rule_is_refused_before_training(tmp_path):
    command = [sys.executable, str(SCRIPT), "--soft-lanes", "--logdir", str(tmp_path / "t")]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 2
    assert "--soft-lanes needs --lane-membership center" in run.stderr
    assert not (tmp_path / "t").exists() and not (tmp_path / "t_center_soft").exists()
