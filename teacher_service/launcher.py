"""Run `recdistill teacher serve` as a child process and wait for it (used by the demo, benchmarks, tests)."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from recdistill.core.processes import child_process, free_port

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherEndpoints:
    grpc_url: str
    http_url: str
    metrics_url: str
    model_name: str


@contextmanager
def teacher_process(checkpoint: Path, model_name: str = "teacher", ready_timeout_s: float = 180.0,
                    log_path: Path | None = None, instances: int | None = None, grpc_port: int | None = None,
                    env: dict[str, str] | None = None, niceness: int = 0
                    ) -> Iterator[tuple[TeacherEndpoints, subprocess.Popen]]:
    """Start Triton serving `checkpoint` (on free ports unless `grpc_port` is given; `env`: e.g. TEACHER_*
    settings; `niceness`: a lower CPU priority, beside serving); SIGTERM it on exit."""
    import tritonclient.grpc as grpcclient

    http, grpc, metrics = free_port(), grpc_port or free_port(), free_port()
    command = [str(Path(sys.executable).parent / "recdistill"), "teacher", "serve", "--checkpoint", str(checkpoint),
               "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
               "--model-name", model_name]
    if instances:
        command += ["--instances", str(instances)]
    endpoints = TeacherEndpoints(f"127.0.0.1:{grpc}", f"127.0.0.1:{http}", f"127.0.0.1:{metrics}", model_name)
    with grpcclient.InferenceServerClient(endpoints.grpc_url) as client, \
            child_process(command, lambda: client.is_model_ready(model_name), "teacher serve", ready_timeout_s,
                          log_path, env, niceness=niceness) as process:
        logger.info("teacher ready on %s (pid %d)", endpoints.grpc_url, process.pid)
        yield endpoints, process
