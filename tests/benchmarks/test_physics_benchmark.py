"""Smoke run of the physics learning benchmark: it trains, evaluates and reports every run, marks
a partial benchmark as such and keeps the investigation notes of an existing report."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "physics.py"
NOTES = "## Investigation: GI-PPO on Cartpole\n\nNotes by hand.\n\n### Alpha\n\nMore notes.\n"


def _benchmark():
    spec = importlib.util.spec_from_file_location("physics_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> None:
    command = [sys.executable, str(SCRIPT), *args]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]


def test_quick_physics_benchmark_writes_a_partial_evaluated_table_and_keeps_the_notes(tmp_path):
    quick = tmp_path / "physics_quick"
    quick.mkdir()
    (quick / "physics.md").write_text("# Old table\n\n| old | row |\n\n" + NOTES)
    _run(
        "--quick",
        "--tasks",
        "cartpole",
        "--algos",
        "ppo",
        "rp",
        "--workers",
        "1",
        "--logdir",
        str(tmp_path / "physics"),
    )
    report = (quick / "physics.md").read_text()
    rows = re.findall(
        r"^\| Cartpole \| (PPO|RP) \| 1 \| 2 of 500 epochs \(0\.4 %\) \| 4 \| "
        r".* \| (-?\d+) ± 0 \| (-\d+) \| \d+\.\d\d \|$",
        report,
        re.MULTILINE,
    )
    assert {algo for algo, _, _ in rows} == {"PPO", "RP"}
    # Cartpole's per-step reward is at most 0, and 240 steps hanging still cost about 2369.
    assert all(-20000 < int(evaluation) <= 0 for _, evaluation, _ in rows)
    assert {authors for _, _, authors in rows} == {"-1094", "-496"}
    assert report.startswith("# Differentiable physics: GI-PPO and the baselines (partial)")
    assert "**Partial:** tasks Cartpole of Cartpole, Ant, Hopper; algorithms PPO, RP of" in report
    assert "a fraction of the paper budget: Cartpole 2 of 500 epochs (0.4 %)" in report
    assert "| old | row |" not in report
    assert report.endswith("\n\n" + NOTES)
    assert (quick / "physics.png").stat().st_size > 1000
    assert all((run / "evaluation.json").exists() for run in quick.glob("cartpole_*"))

    _run(
        "--quick",
        "--report-only",
        "--tasks",
        "cartpole",
        "--algos",
        "ppo",
        "rp",
        "--logdir",
        str(tmp_path / "physics"),
    )
    again = (quick / "physics.md").read_text()
    assert again.count("## Investigation") == 1 and again.endswith("\n\n" + NOTES)


def test_full_budget_is_complete_and_a_fraction_is_stated():
    benchmark = _benchmark()
    epochs = benchmark.parse_epochs(["ant=200", "hopper=50"])
    assert epochs == {"cartpole": 500, "ant": 200, "hopper": 50}
    full = benchmark.parse_epochs([])
    tasks, algos = list(benchmark.TASKS), list(benchmark.ALGOS)
    assert benchmark.partial_reasons(tasks, algos, [1, 2, 3], full, 54, 54) == []
    reasons = benchmark.partial_reasons(tasks, algos, [1, 2, 3], epochs, 50, 54)
    assert reasons == [
        "a fraction of the paper budget: Ant 200 of 2000 epochs (10 %), "
        "Hopper 50 of 2000 epochs (2.5 %)",
        "50 of 54 requested runs finished (only finished runs are evaluated)",
    ]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("walker=10", "TASK one of cartpole, ant, hopper"),
        ("ant", "expected TASK=N"),
        ("ant=ten", "N a whole number"),
        ("ant=0", r"ant must be in 1\.\.2000 \(the paper budget\), got 0"),
        ("cartpole=501", r"cartpole must be in 1\.\.500 \(the paper budget\), got 501"),
    ],
)
def test_bad_epochs_name_the_item_and_the_valid_range(item, message):
    with pytest.raises(ValueError, match=message) as error:
        _benchmark().parse_epochs([item])
    assert f"--epochs '{item}'" in str(error.value)
