"""The README's scenario example runs as printed and shows a real gradient."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- readme-example -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, "README lost its marked scenario example"
    return match.group(1)


def test_readme_example_fits_in_fifteen_lines_of_code():
    code_lines = [line for line in readme_example().splitlines() if line.strip()]
    assert len(code_lines) <= 16


def test_readme_example_runs_and_the_humans_speed_depends_on_the_av(capsys):
    exec(compile(readme_example(), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    speed, gradient = (float(v) for v in re.findall(r"(-?\d+\.\d+)", printed)[:2])
    assert 5.0 < speed < 30.0
    assert gradient > 0.0, "a faster autonomous car must let the humans behind it go faster"
