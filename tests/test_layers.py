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


APPS = ("distill_worker", "student_server", "teacher_service")


def test_other_packages_enter_an_app_by_its_front_door() -> None:
    """The CLI, the demo, the benchmarks and the load tests (and the other apps, which import none) import an
    app's names from the app itself (its `__all__`), never from its rooms; every name of a face resolves."""
    import importlib

    import grimp

    graph = grimp.build_graph("recdistill", *APPS, "benchmarks", "loadtests")
    rooms_entered = sorted(
        (module, imported) for module in graph.modules for imported in graph.find_modules_directly_imported_by(module)
        if (app := imported.split(".")[0]) in APPS and imported != app and module.split(".")[0] != app)
    assert rooms_entered == []
    for app in APPS:
        face = importlib.import_module(app)
        assert face.__all__, app
        assert all(getattr(face, name) is not None for name in face.__all__)
        with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
            face.not_a_name  # noqa: B018


def test_a_face_refuses_a_public_name_that_is_also_a_module() -> None:
    from recdistill.core.faces import lazy_face

    with pytest.raises(ValueError, match=r"\['serve'\] are also its modules' names"):
        lazy_face("teacher_service", {"serve": "serve"})
    names, attribute = lazy_face("teacher_service", {"serve_teacher": "serve:serve"})
    assert names == ["serve_teacher"]
    assert attribute("serve_teacher").__module__ == "teacher_service.serve"
