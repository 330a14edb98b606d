"""Shared fixtures: the real MovieLens-100K prepared once per session; a registry of real ONNX students."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from distill_worker.export import publish_student
from distill_worker.student import StudentConfig, StudentModel
from recdistill.artifact import write_state
from recdistill.data.dataset import PreparedDataset
from recdistill.features.encoder import Encoder


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


@pytest.fixture(scope="session")
def registry_template(ml100k: PreparedDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with features.json and two real (untrained, differently seeded) student versions."""
    root = tmp_path_factory.mktemp("registry-template")
    ml100k.schema.save(root / "features.json")
    encoder = Encoder(ml100k.schema, "student")
    probe, _ = encoder.assemble(ml100k.contexts(encoder, ml100k.split("test")[:32], "slate"))
    for seed, version in ((1, "v1"), (2, "v2")):
        torch.manual_seed(seed)
        model = StudentModel(ml100k.schema, StudentConfig()).eval()
        publish_student(root, version, model, ml100k.schema, probe, {"teacher_version": None, "metrics": {}})
    write_state(root, {"active": "v1", "history": []})
    return root


@pytest.fixture
def registry(registry_template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "registry"
    shutil.copytree(registry_template, target)
    return target
