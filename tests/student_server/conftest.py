"""Real student servers (uvicorn + grpc.aio) on free localhost ports, over a registry of real ONNX models."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import uvicorn

from recdistill.core.contracts.records import InvalidRecordError, SampledRequest, SampleRecord, decode_record
from recdistill.core.processes import free_port
from recdistill.core.samplelog import SampleLog
from student_server.app import create_app
from student_server.main import uvicorn_options
from student_server.settings import StudentSettings

TOKEN = "test-operator-token"


@dataclass
class RunningServer:
    http_url: str
    grpc_target: str
    settings: StudentSettings
    server: uvicorn.Server


def _bind(settings: StudentSettings) -> tuple[socket.socket, StudentSettings]:
    """The HTTP socket bound before the server starts: a port another process took since `free_port` chose
    it is replaced by a new one here, instead of failing the server's start (uvicorn exits on it)."""
    for _ in range(20):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.host, settings.port))
        except OSError:
            sock.close()
            settings = settings.model_copy(update={"port": free_port()})
            continue
        return sock, settings
    raise RuntimeError("no free port for the test server")


@asynccontextmanager
async def run_server(settings: StudentSettings) -> AsyncIterator[RunningServer]:
    sock, settings = _bind(settings)
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on", **uvicorn_options(settings))
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
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
        "sample_log": tmp_path / "samples", "warmup_runs": 2, "state_poll_s": 0.2, "server_id": "test",
    }
    return StudentSettings(**(values | overrides))


def onnx_scores(registry: Path, version: str, tensors: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(registry / version / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, tensors)[0]


def sampled_records(sample_log: Path, partition: str = "test-0") -> list[SampleRecord]:
    """Every record one partition of the sample log holds, decoded as the worker decodes them."""
    return [decode_record(payload) for _, payload in SampleLog(sample_log / partition).read(0, 1 << 30)]


def client_ids(sample_log: Path) -> dict[str, str | None]:
    """The server's id of each sampled request in the log -> the client's `request_id` (unreadable records
    skipped)."""
    out: dict[str, str | None] = {}
    for partition in sorted(p for p in sample_log.iterdir() if p.is_dir()):
        for _, payload in SampleLog(partition).read(0, 1 << 30):
            try:
                record = decode_record(payload)
            except InvalidRecordError:
                continue
            if isinstance(record, SampledRequest):
                out[record.request_id] = record.client_request_id
    return out


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    """Poll /readyz of a server process until it answers 200 (it must not exit meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else "server exited"
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError("student server not ready")
