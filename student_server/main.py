"""Run the student server: one process, or one uvicorn worker per core sharing the HTTP and gRPC
ports (SO_REUSEPORT), with Prometheus metrics aggregated across them."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import uvicorn

from recdistill.core.logs import configure_logging
from student_server.app import create_app
from student_server.http_protocol import CoalescingHttpToolsProtocol
from student_server.rank_http import RankFastPath
from student_server.settings import StudentSettings

logger = logging.getLogger(__name__)


def worker_app() -> RankFastPath:
    """Factory each worker process calls; settings come from the STUDENT_* environment."""
    configure_logging(json_lines=True)
    return create_app(StudentSettings())


def serve(settings: StudentSettings) -> None:
    if settings.workers <= 1:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                    access_log=settings.access_log, timeout_graceful_shutdown=10, http=CoalescingHttpToolsProtocol,
                    log_config=None)  # uvicorn's records go to the handlers `recdistill` configured
        return
    # Worker processes rebuild the settings from the environment.
    for name, value in settings.model_dump(exclude_none=True).items():
        os.environ[f"STUDENT_{name.upper()}"] = str(value)
    if settings.admin_token:
        os.environ["RECDISTILL_ADMIN_TOKEN"] = settings.admin_token
    metrics_dir = tempfile.mkdtemp(prefix="recdistill-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run("student_server.main:worker_app", factory=True, host=settings.host, port=settings.port,
                    workers=settings.workers, log_level="info", access_log=settings.access_log,
                    timeout_graceful_shutdown=10, http=CoalescingHttpToolsProtocol)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
