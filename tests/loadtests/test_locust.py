"""A short headless Locust run of every user against a real student server: zero failures."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from recdistill.core.processes import free_port
from tests.student_server.conftest import TOKEN

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]


def test_headless_locust_run_has_no_failures(registry: Path, tmp_path: Path, ml100k_dir: Path) -> None:
    port, grpc_port = free_port(), free_port()
    bin_dir = Path(sys.executable).parent
    env = os.environ | {"RECDISTILL_ADMIN_TOKEN": TOKEN, "RECDISTILL_GRPC_TARGET": f"127.0.0.1:{grpc_port}",
                        "RECDISTILL_DATA": str(ml100k_dir), "RECDISTILL_LOAD_REQUESTS": "50"}
    server = subprocess.Popen([str(bin_dir / "recdistill"), "student", "serve", "--registry", str(registry),
                               "--port", str(port), "--grpc-port", str(grpc_port),
                               "--sample-log", str(tmp_path / "samples")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, "server exited"
            assert time.monotonic() < deadline, "server not ready in 60 s"
            time.sleep(0.2)
        result = subprocess.run(
            [str(bin_dir / "locust"), "-f", str(ROOT / "loadtests"), "--headless", "-u", "6", "-r", "6",
             "-t", "8s", "--host", f"http://127.0.0.1:{port}", "--csv", str(tmp_path / "locust"),
             "--only-summary"],
            env=env, capture_output=True, text=True, timeout=120, cwd=ROOT,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    with (tmp_path / "locust_stats.csv").open() as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert int(rows["/v1/rank"]["Request Count"]) > 20
    assert int(rows["Ranking/Rank"]["Request Count"]) > 5
    assert int(rows["/admin/versions/{v}/activate"]["Request Count"]) >= 1
