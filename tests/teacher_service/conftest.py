"""A tiny real teacher, trained on a slice of MovieLens-100K and served by a real Triton process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from recdistill.data.dataset import PreparedDataset
from teacher_service.train import TeacherTrainConfig, train_teacher
from tests.helpers import free_ports, wait_until


@pytest.fixture(scope="session")
def tiny_teacher(ml100k: PreparedDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "checkpoint"
    train_teacher(ml100k.directory, out, TeacherTrainConfig(task="slate", size="tiny", epochs=1,
                                                           max_train_events=3_000, train_negatives=4))
    return out


@dataclass
class RunningTriton:
    grpc_url: str
    http_url: str
    metrics_url: str
    process: subprocess.Popen


@pytest.fixture(scope="session")
def triton_teacher(tiny_teacher: Path) -> Iterator[RunningTriton]:
    import tritonclient.grpc as grpcclient

    http, grpc, metrics = free_ports(3)
    command = [str(Path(sys.executable).parent / "recdistill"), "teacher", "serve", "--checkpoint", str(tiny_teacher),
               "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    env = os.environ | {"LD_LIBRARY_PATH": ""}  # the launcher must fix the library path itself
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{grpc}")
    try:
        wait_until(lambda: client.is_model_ready("teacher"), 180, process, "triton teacher")
        yield RunningTriton(f"127.0.0.1:{grpc}", f"127.0.0.1:{http}", f"127.0.0.1:{metrics}", process)
    finally:
        client.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, "teacher serve must exit cleanly on SIGTERM"
