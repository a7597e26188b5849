"""Every Python block of README.md and docs/*.md runs as written, each in a fresh namespace and
an empty working directory (files it writes land there)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    pytest.param(page, index, code, id=f"{page.relative_to(ROOT)}:{index}")
    for page in PAGES
    for index, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))
]


@pytest.mark.parametrize(("page", "index", "code"), BLOCKS)
def test_the_block_runs_as_written(page, index, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{page}:block{index}", "exec"), {"__name__": f"doc_block_{index}"})


def test_the_pages_hold_blocks():
    assert len(BLOCKS) >= 10


def test_the_rl_guide_names_every_registered_algorithm_and_only_those():
    from difftraffic_rl.algorithms import ALGORITHMS

    guide = (ROOT / "docs" / "rl.md").read_text()
    choices = re.search(r"`--algo \{([a-z,]+)\}`", guide)
    assert choices is not None
    assert set(choices.group(1).split(",")) == set(ALGORITHMS)
    documented_modules = set(re.findall(r"^\| `([a-z_]+)\.py` \|", guide, re.M))
    registered_modules = {cls.__module__.rsplit(".", 1)[-1] for cls in ALGORITHMS.values()}
    assert documented_modules == registered_modules
