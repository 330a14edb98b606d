"""kill -9 of a serving student server under load: every acknowledged record survives, the restarted
server appends to its own partition, and the log reads back whole."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from recdistill.core.contracts.records import FeedbackRecord, SampledRequest
from recdistill.core.processes import free_port
from tests.student_server.conftest import sampled_records, wait_ready

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).parents[2] / "examples" / "rank_request.movielens-100k.json"


def _start(registry: Path, samples: Path, port: int, grpc_port: int) -> subprocess.Popen:
    command = [str(Path(sys.executable).parent / "recdistill"), "student", "serve", "--registry", str(registry),
               "--port", str(port), "--grpc-port", str(grpc_port), "--sample-log", str(samples),
               "--sampling-rate", "1.0", "--server-id", "killed"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())


async def test_kill_9_under_load_loses_no_acknowledged_record(registry: Path, tmp_path: Path) -> None:
    samples, port, grpc_port = tmp_path / "samples", free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start(registry, samples, port, grpc_port)
    acknowledged: list[str] = []
    body = EXAMPLE.read_bytes()
    try:
        wait_ready(url, server)

        async def client(worker: int) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                for i in range(1_000):  # bounded; the kill ends it long before
                    try:
                        await http.post("/v1/rank", content=body)
                        item = f"{worker}-{i}"
                        response = await http.post("/v1/feedback", json={"request_id": "r", "item_id": item,
                                                                         "label": 1})
                    except httpx.TransportError:
                        return
                    if response.status_code == 202:
                        acknowledged.append(item)

        clients = [asyncio.create_task(client(w)) for w in range(8)]
        while len(acknowledged) < 200:
            await asyncio.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        await asyncio.wait_for(asyncio.gather(*clients), timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    # The restarted server reopens its partition (a torn tail, if any, is cut) and appends after it.
    restarted = _start(registry, samples, port, grpc_port)
    try:
        wait_ready(url, restarted)
        response = httpx.post(f"{url}/v1/feedback", json={"request_id": "r", "item_id": "after", "label": 0})
        assert response.status_code == 202
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=30)
    records = sampled_records(samples, "killed-0")
    stored = [r.item_id for r in records if isinstance(r, FeedbackRecord)]
    assert set(acknowledged) <= set(stored), f"{len(set(acknowledged) - set(stored))} acknowledged records lost"
    assert len(stored) == len(set(stored)), "no record written twice"
    assert stored[-1] == "after"
    assert any(isinstance(r, SampledRequest) for r in records)
    assert sorted(p.name for p in samples.iterdir() if p.is_dir()) == ["killed-0"]
