"""Run `recdistill teacher serve` as a child process and wait for it (used by the demo, benchmarks, tests)."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class TeacherEndpoints:
    grpc_url: str
    http_url: str
    metrics_url: str
    model_name: str


@contextmanager
def teacher_process(checkpoint: Path, model_name: str = "teacher", ready_timeout_s: float = 180.0,
                    log_path: Path | None = None, instances: int | None = None, grpc_port: int | None = None
                    ) -> Iterator[tuple[TeacherEndpoints, subprocess.Popen]]:
    """Start Triton serving `checkpoint` (on free ports unless `grpc_port` is given); SIGTERM it on exit."""
    import tritonclient.grpc as grpcclient

    http, grpc, metrics = free_port(), grpc_port or free_port(), free_port()
    command = [str(Path(sys.executable).parent / "recdistill"), "teacher", "serve", "--checkpoint", str(checkpoint),
               "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
               "--model-name", model_name]
    if instances:
        command += ["--instances", str(instances)]
    log = log_path.open("w") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    endpoints = TeacherEndpoints(f"127.0.0.1:{grpc}", f"127.0.0.1:{http}", f"127.0.0.1:{metrics}", model_name)
    try:
        with grpcclient.InferenceServerClient(endpoints.grpc_url) as client:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"teacher serve exited with {process.returncode} before it was ready"
                                       + (f"; see {log_path}" if log_path else ""))
                try:
                    if client.is_model_ready(model_name):
                        break
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"teacher not ready after {ready_timeout_s}s")
                time.sleep(0.25)
        logger.info("teacher ready on %s (pid %d)", endpoints.grpc_url, process.pid)
        yield endpoints, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if log_path:
            log.close()  # type: ignore[union-attr]
