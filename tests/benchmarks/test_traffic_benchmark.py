"""Smoke run of the traffic learning benchmark: it trains, evaluates and reports every run."""

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "traffic.py"


def test_quick_traffic_benchmark_writes_an_evaluated_table_and_a_plot(tmp_path):
    logdir = tmp_path / "traffic"
    command = [sys.executable, str(SCRIPT), "--quick", "--variants", "1lane", "--algos", "ppo",
               "rp", "--workers", "1", "--logdir", str(logdir)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    report = (tmp_path / "traffic_quick" / "traffic.md").read_text()
    rows = re.findall(r"^\| 1lane \| (PPO|RP) \| 1 \| 3 \| \*\*(-?\d+\.\d) ± 0\.0\*\* \|", report,
                      re.MULTILINE)
    assert {algo for algo, _ in rows} == {"PPO", "RP"}
    # An evaluation return lies between -1 (immediate termination) and 1000 (perfect episode).
    assert all(-1.0 <= float(value) <= 1000.0 for _, value in rows)
    assert "variants 1lane of 1lane, 2lane, 3lane, 4lane, 10lane" in report
    assert "2 of 2 requested runs finished" in report
    assert (tmp_path / "traffic_quick" / "traffic.png").stat().st_size > 1000
    for run_dir in (tmp_path / "traffic_quick").glob("pacecar-1lane_*"):
        assert (run_dir / "evaluation.json").exists()
