"""Run the student server: one process, or one uvicorn worker per core sharing the HTTP and gRPC
ports (SO_REUSEPORT), with Prometheus metrics aggregated across them."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

import uvicorn

from recdistill.core.logs import configure_logging
from student_server.app import create_app
from student_server.http_protocol import CoalescingHttpToolsProtocol
from student_server.rank_http import RankFastPath
from student_server.settings import StudentSettings

logger = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
_SUPERVISOR_PID = int(os.environ.get("RECDISTILL_SUPERVISOR_PID", "0"))


def _exit_with_parent() -> None:
    """Ask Linux to SIGTERM this worker when the supervising process dies, also by kill -9: no worker is
    left serving on the port, and a restart can bind it again."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            logger.warning("could not tie this worker to its supervisor (errno %d)", ctypes.get_errno())
        if _SUPERVISOR_PID and os.getppid() != _SUPERVISOR_PID:  # it died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)


def worker_app() -> RankFastPath:
    """Factory each worker process calls; settings come from the STUDENT_* environment."""
    _exit_with_parent()
    configure_logging(json_lines=True)
    return create_app(StudentSettings())


def uvicorn_options(settings: StudentSettings) -> dict[str, Any]:
    """uvicorn's options the settings decide, the same for one process, for workers and in the tests."""
    return {"host": settings.host, "port": settings.port, "access_log": settings.access_log,
            "timeout_keep_alive": settings.keep_alive_s, "timeout_graceful_shutdown": 10,
            "http": CoalescingHttpToolsProtocol}


def serve(settings: StudentSettings) -> None:
    if settings.workers <= 1:
        uvicorn.run(create_app(settings), log_level="info", **uvicorn_options(settings),
                    log_config=None)  # uvicorn's records go to the handlers `recdistill` configured
        return
    # Worker processes rebuild the settings from the environment, where pydantic-settings reads a dict or
    # a list as JSON (never a Python repr).
    for name, value in settings.model_dump(mode="json", exclude_none=True).items():
        os.environ[f"STUDENT_{name.upper()}"] = json.dumps(value) if isinstance(value, dict | list) else str(value)
    if settings.admin_token:
        os.environ["RECDISTILL_ADMIN_TOKEN"] = settings.admin_token
    os.environ["RECDISTILL_SUPERVISOR_PID"] = str(os.getpid())
    metrics_dir = tempfile.mkdtemp(prefix="recdistill-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run("student_server.main:worker_app", factory=True, workers=settings.workers, log_level="info",
                    **uvicorn_options(settings))
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
