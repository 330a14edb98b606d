"""Disk full during appends, for real: the server runs with a file-size limit (RLIMIT_FSIZE), so its
sample-log segment cannot grow past it. Acknowledged feedback stays readable, refused feedback is told to
retry (503, never 500), the server keeps ranking, and after a restart with room again the log goes on."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from recdistill.core.contracts.records import FeedbackRecord
from recdistill.core.processes import free_port
from tests.student_server.conftest import sampled_records, wait_ready

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).parents[2] / "examples" / "rank_request.json"
LIMIT = 16 * 1024


def _start(registry: Path, samples: Path, port: int, file_limit: int | None) -> subprocess.Popen:
    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    command = [str(Path(sys.executable).parent / "recdistill"), "student", "serve", "--registry", str(registry),
               "--port", str(port), "--grpc-port", str(free_port()), "--sample-log", str(samples),
               "--server-id", "full"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy(),
                            preexec_fn=limit_files if file_limit else None)  # noqa: PLW1509 - a test's child


def test_a_full_disk_refuses_feedback_with_503_and_loses_nothing_acknowledged(registry: Path, tmp_path: Path) -> None:
    samples, port = tmp_path / "samples", free_port()
    url = f"http://127.0.0.1:{port}"
    # The registry's ONNX files are read, not written: the limit only bites the sample log.
    server = _start(registry, samples, port, LIMIT)
    acknowledged, refused = [], []
    pad = "x" * 120  # ~200 bytes a record: the limit is reached after ~80 records
    try:
        wait_ready(url, server)
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(150):
                response = client.post("/v1/feedback", json={"request_id": f"r{i}-{pad}"[:128], "item_id": str(i),
                                                             "label": 1})
                assert response.status_code in (202, 503), response.text
                (acknowledged if response.status_code == 202 else refused).append(str(i))
                if response.status_code == 503:
                    assert int(response.headers["retry-after"]) >= 1
            assert client.post("/v1/rank", content=EXAMPLE.read_bytes()).status_code == 200, "ranking goes on"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert acknowledged
    assert refused, "the limit was reached"
    segment_bytes = sum(p.stat().st_size for p in (samples / "full-0").glob("segment-*.log"))
    assert segment_bytes <= LIMIT
    stored = [r.item_id for r in sampled_records(samples, "full-0") if isinstance(r, FeedbackRecord)]
    assert stored == acknowledged, "exactly the acknowledged records, in order: written = read"

    restarted = _start(registry, samples, port, None)  # room again
    try:
        wait_ready(url, restarted)
        response = httpx.post(f"{url}/v1/feedback", json={"request_id": "r", "item_id": "after", "label": 0})
        assert response.status_code == 202
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=30)
    stored = [r.item_id for r in sampled_records(samples, "full-0") if isinstance(r, FeedbackRecord)]
    assert stored == [*acknowledged, "after"]
