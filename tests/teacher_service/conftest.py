"""A tiny real teacher, trained on a slice of MovieLens-100K and served by a real Triton process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from recdistill.data.dataset import PreparedDataset
from teacher_service.launcher import teacher_process
from teacher_service.train import TeacherTrainConfig, train_teacher


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
