"""Start the student server as a child process (`recdistill student serve`) on free ports, wait until it is
ready, stop it (SIGTERM, then SIGKILL) on exit, also on errors: what the demo, the benchmarks and the tests
start, the same way. Next to the teacher's (`teacher_service.launcher`)."""

from __future__ import annotations

import logging
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from recdistill.core.processes import child_process, free_port

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudentServer:
    http_url: str
    grpc_target: str
    token: str  # the operator token it was started with (RECDISTILL_ADMIN_TOKEN)
    sample_log: str  # file:DIR or redis://...
    pid: int


@contextmanager
def student_process(registry: Path, sample_log: str | Path, *flags: str, workers: int = 1,
                    token: str | None = None, ready: Literal["healthz", "readyz"] = "readyz",
                    ready_timeout_s: float = 120.0, log_path: Path | None = None, env: dict[str, str] | None = None,
                    http_port: int | None = None, grpc_port: int | None = None, niceness: int = 0
                    ) -> Iterator[tuple[StudentServer, subprocess.Popen]]:
    """`recdistill student serve` for `registry`, sampling to `sample_log`, with any further `flags` (e.g.
    `--sampling-rate 1`). Ready when `/<ready>` answers 200: `readyz` once a version serves, `healthz` as soon
    as the process listens (a registry with no active version yet)."""
    http, grpc = http_port or free_port(), grpc_port or free_port()
    token = token or secrets.token_urlsafe(24)
    command = [str(Path(sys.executable).parent / "recdistill"), "student", "serve", "--registry", str(registry),
               "--port", str(http), "--grpc-port", str(grpc), "--sample-log", str(sample_log),
               "--workers", str(workers), *flags]
    url = f"http://127.0.0.1:{http}"

    def is_ready() -> bool:
        return httpx.get(f"{url}/{ready}", timeout=1).status_code == 200

    with child_process(command, is_ready, "student serve", ready_timeout_s, log_path,
                       (env or {}) | {"RECDISTILL_ADMIN_TOKEN": token}, stop_timeout_s=30,
                       niceness=niceness) as process:
        logger.info("student server ready on %s (pid %d)", url, process.pid)
        yield StudentServer(url, f"127.0.0.1:{grpc}", token, str(sample_log), process.pid), process
