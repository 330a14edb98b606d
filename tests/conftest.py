"""Shared fixtures: the real MovieLens-100K, prepared once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from recdistill.data.dataset import PreparedDataset


@pytest.fixture(scope="session")
def ml100k_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from recdistill.data.movielens import load_movielens_100k
    from recdistill.data.prepare import prepare

    out = tmp_path_factory.mktemp("ml-100k")
    prepare(load_movielens_100k(), out)
    return out


@pytest.fixture(scope="session")
def ml100k(ml100k_dir: Path) -> PreparedDataset:
    return PreparedDataset(ml100k_dir)
