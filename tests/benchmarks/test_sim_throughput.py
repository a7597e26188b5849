"""The throughput report: its targets use the ratios paired with SUMO, and regenerating the page
keeps the sections it does not write."""

import importlib.util
import sys
from pathlib import Path

import pytest

# Loaded from its file: putting benchmarks/ on sys.path would let its scripts' names hide
# installed packages for every later test of the session.
_SPEC = importlib.util.spec_from_file_location(
    "sim_throughput", Path(__file__).resolve().parents[2] / "benchmarks" / "sim_throughput.py"
)
assert _SPEC is not None and _SPEC.loader is not None
bench = importlib.util.module_from_spec(_SPEC)
sys.modules["sim_throughput"] = bench  # its dataclasses look their module up there
_SPEC.loader.exec_module(bench)


def _row(mode: str, forward: float, backward: float, sumo: float) -> bench.Row:
    road, batch, vehicles = bench.TARGET_CASE
    return bench.Row(mode, road, batch, vehicles, forward, backward, 1.0, sumo)


def test_targets_use_the_paired_median_ratio_over_the_one_shot_table():
    # One-shot table: 60x forward (met); paired alternations: median 40x (missed).
    rows = [_row("fused", forward=60e6, backward=30e6, sumo=1e6)]
    paired = {"fused": bench.Paired(forward=[35.0, 40.0, 70.0], backward=[25.0, 21.0, 10.0])}
    lines = bench.target_lines(rows, paired)
    assert "forward 1024×16 4-lane straight / SUMO (median of 3 alternations" in lines[0]
    assert "40.00×" in lines[0] and "missed by 1.25×" in lines[0]
    assert "21.00×" in lines[1] and lines[1].endswith("met")
    unpaired = bench.target_lines(rows, {})
    assert "60.00×" in unpaired[0] and unpaired[0].endswith("met")


def test_per_vehicle_targets_use_the_paired_median_where_measured():
    # One-shot table: 4096x40 at 0.8x the per-vehicle rate of 1024x16 (missed); alternations:
    # median 1.1x (met).
    road, batch, vehicles = bench.TARGET_CASE
    large = bench.LARGE_CASES[0]
    rows = [
        bench.Row("fused", road, batch, vehicles, 30e6, 10e6, 1.0, None),
        bench.Row("fused", *large, 24e6, 8e6, 1.0, None),
    ]
    per_vehicle = {"fused": {large: [0.9, 1.1, 1.2]}}
    (line,) = bench.target_lines(rows, {}, per_vehicle)
    assert "per vehicle (median of 3 alternations, range 0.9-1.2×): 1.10×" in line
    assert line.endswith("met")
    (one_shot,) = bench.target_lines(rows, {})
    assert "0.80×" in one_shot and "missed by 1.25×" in one_shot


def test_regenerating_the_page_keeps_hand_written_sections(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text(
        "# Simulator throughput\n\nold table\n\n## Targets\n\n- old target line\n\n"
        "## Provenance and reading\n\nwritten by hand\n\n## On a GPU\n\nH100 table\n"
    )
    rows = [_row("eager", forward=2e6, backward=1e6, sumo=1e6)]
    bench.write_report(rows, {}, page, "## Notes\n\nnotes\n", "cpu", (0.5,) * 3, (0.6,) * 3)
    text = page.read_text()
    assert "old table" not in text and "old target line" not in text
    assert text.count("## Targets") == 1
    assert "## Provenance and reading\n\nwritten by hand\n" in text
    assert text.index("## Notes") < text.index("## Provenance") < text.index("## On a GPU")
    bench.write_report(rows, {}, page, "## Notes\n\nnotes\n", "cpu", (0.5,) * 3, (0.6,) * 3)
    assert page.read_text() == text


@pytest.mark.parametrize("old", ["", "# Simulator throughput\n\nno sections\n"])
def test_a_page_without_sections_keeps_nothing(old):
    assert bench.kept_sections(old, "## Targets\n") == []
