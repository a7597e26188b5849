"""The package's layers import one way: core -> env -> scenarios' environments; the render
package draws states and never imports the environment module."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "difftraffic"


def _imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_the_render_package_never_imports_the_environment_module():
    for path in (PACKAGE / "render").glob("*.py"):
        assert "difftraffic.env" not in _imports(path), path


def test_the_generic_environment_knows_no_scenario():
    assert not any(m.startswith("difftraffic.scenarios") for m in _imports(PACKAGE / "env.py"))


def test_the_simulator_never_imports_the_rl_package_or_pygame_at_import_time():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {
            (n.module or "") if isinstance(n, ast.ImportFrom) else n.names[0].name
            for n in top_level
        }
        assert not any(name.startswith(("difftraffic_rl", "pygame")) for name in names), path
