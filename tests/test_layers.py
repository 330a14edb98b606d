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
