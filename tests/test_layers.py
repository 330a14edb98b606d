"""The folder layout is the architecture: import-linter's contracts (pyproject.toml) hold."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

pytestmark = pytest.mark.unit
ROOT = Path(__file__).parents[1]


def test_no_import_runs_up_a_layer_or_across_apps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=os.fspath(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def test_no_module_imports_itself_through_others() -> None:
    """No import circle anywhere (a lazy import inside a function counts too): each would make the order in
    which modules load matter."""
    import grimp

    graph = grimp.build_graph("recdistill", "teacher_service", "student_server", "distill_worker", "benchmarks",
                              "loadtests")
    imports = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    circles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(imports[module]):
            if state.get(imported) == "open":
                circles.append([*path[path.index(imported):], imported])
            elif imported not in state and imported in imports:
                visit(imported, [*path, imported])
        state[module] = "done"

    for module in sorted(imports):
        if module not in state:
            visit(module, [module])
    assert circles == []
