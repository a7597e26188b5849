"""The function benchmark's same-run timing of the authors' code: their configuration is run on
the CPU for the asked epochs, start-up cancels out, and the report shows the ratio measured."""

import importlib.util
import re
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "function_optimization.py"
AUTHORS_SECONDS, OURS_SECONDS = 0.04, 0.02

FAKE_TRAIN = textwrap.dedent(
    f"""
    import sys, time, yaml
    args = sys.argv[1:]
    assert args[args.index("--device") + 1] == "cpu"
    params = yaml.safe_load(open(args[args.index("--cfg") + 1]))["params"]
    assert params["device"] == "cpu" and params["algo"]["name"] in ("gippo", "ppo")
    time.sleep(0.5 + {AUTHORS_SECONDS} * (params["algo"]["max_epochs"] + 1))
    """
)


def _benchmark():
    spec = importlib.util.spec_from_file_location("function_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_authors_checkout(root: Path) -> Path:
    for algo in ("gippo", "ppo"):
        config = root / "config" / "func_optim" / "dejong64" / f"{algo}.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(
            f"params:\n  device: 'cuda:0'\n  algo:\n    name: {algo}\n    max_epochs: 2000\n"
        )
    (root / "train.py").write_text(FAKE_TRAIN)
    return root


def _fake_ours(algo: str, epochs: int, scratch: Path) -> list[str]:
    return [sys.executable, "-c", f"import time; time.sleep(0.2 + {OURS_SECONDS} * {epochs})"]


def test_the_authors_code_is_timed_per_epoch_without_start_up(tmp_path, monkeypatch):
    benchmark = _benchmark()
    monkeypatch.setattr(benchmark, "_our_command", _fake_ours)
    code = _fake_authors_checkout(tmp_path / "gippo")
    timing = benchmark.time_against_authors(code, sys.executable, 1, tmp_path / "runs")
    per_epoch = timing["seconds_per_epoch"]
    for algo in ("gippo", "ppo"):
        assert per_epoch[f"authors/{algo}"] == pytest.approx(AUTHORS_SECONDS, rel=0.3)
        assert per_epoch[f"ours/{algo}"] == pytest.approx(OURS_SECONDS, rel=0.3)
    section = "\n".join(benchmark.authors_speed_section(tmp_path / "runs"))
    rows = re.findall(r"^\| (GI-PPO|PPO) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)× \|$", section, re.M)
    assert {row[0] for row in rows} == {"GI-PPO", "PPO"}
    for _, theirs, ours, speedup in rows:
        assert float(speedup) == pytest.approx(float(theirs) / float(ours), abs=0.06)
    assert str(code) in section


def test_without_the_authors_code_the_report_says_how_to_time_it(tmp_path):
    section = "\n".join(_benchmark().authors_speed_section(tmp_path))
    assert "not measured in this run" in section and "--authors-code" in section
