"""Real student servers (uvicorn + grpc.aio) on free localhost ports, over a registry of real ONNX models."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import uvicorn

from distill_worker.export import publish_student
from distill_worker.student import StudentConfig, StudentModel
from recdistill.artifact import write_state
from recdistill.data.dataset import PreparedDataset
from recdistill.features.encoder import Encoder
from student_server.app import create_app
from student_server.settings import StudentSettings
from teacher_service.launcher import free_port

TOKEN = "test-operator-token"


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


@dataclass
class RunningServer:
    http_url: str
    grpc_target: str
    settings: StudentSettings
    server: uvicorn.Server


@asynccontextmanager
async def run_server(settings: StudentSettings) -> AsyncIterator[RunningServer]:
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port, log_level="warning",
                            lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield RunningServer(f"http://{settings.host}:{settings.port}", f"{settings.host}:{settings.grpc_port}",
                            settings, server)
    finally:
        server.should_exit = True
        await task


def make_settings(registry: Path, tmp_path: Path, **overrides: object) -> StudentSettings:
    values: dict[str, object] = {
        "registry": registry, "port": free_port(), "grpc_port": free_port(), "admin_token": TOKEN,
        "sample_log": tmp_path / "samples", "warmup_runs": 2, "state_poll_s": 0.2,
    }
    return StudentSettings(**(values | overrides))


def onnx_scores(registry: Path, version: str, tensors: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(registry / version / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, tensors)[0]
