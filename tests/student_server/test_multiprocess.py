"""`recdistill student serve --workers 2`: two processes behave as one server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from recdistill.cli import app
from recdistill.core.contracts.registry import Holdback
from recdistill.core.processes import free_port
from tests.student_server.conftest import TOKEN, sampled_records, wait_ready

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).parents[2] / "examples" / "rank_request.movielens-100k.json"


def test_two_workers_share_activation_metrics_and_ports(registry: Path, tmp_path: Path) -> None:
    port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    # Per-source rates reach the worker processes (as JSON: a Python repr crash-looped them).
    command = [str(Path(sys.executable).parent / "recdistill"), "student", "serve", "--registry", str(registry),
               "--port", str(port), "--grpc-port", str(grpc_port), "--workers", "2",
               "--sample-log", str(tmp_path / "samples"), "--sampling-rate", "1",
               "--sampling-rate-by-source", "search=0.25"]
    env = os.environ | {"RECDISTILL_ADMIN_TOKEN": TOKEN, "STUDENT_STATE_POLL_S": "0.2"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    body = EXAMPLE.read_bytes()
    try:
        wait_ready(url, process)
        fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection each time: both workers serve
        with httpx.Client(base_url=url, limits=fresh, timeout=30) as client:
            for index in range(80):  # 40 from 'search' at 0.25: none sampled has a chance of 1e-5 (15 was 1.3%)
                source = {"x-traffic-source": "search"} if index % 2 else {}
                assert client.post("/v1/rank", content=body, headers=source).json()["model_version"] == "v1"
            result = CliRunner().invoke(app, ["student", "models", "activate", "v2", "--url", url, "--token", TOKEN])
            assert result.exit_code == 0, result.output
            time.sleep(1.0)  # > the registry poll period of every worker
            versions = {client.post("/v1/rank", content=body).json()["model_version"] for _ in range(40)}
            metrics_text = client.get("/metrics").text
        assert versions == {"v2"}, "the activation must reach every worker process"
        # An A/B test started through the CLI reaches both processes too: each user's arm, on any connection.
        result = CliRunner().invoke(app, ["student", "models", "holdback", "v1", "--share", "0.5", "--salt", "mp",
                                          "--url", url, "--token", TOKEN])
        assert result.exit_code == 0, result.output
        holdback = Holdback(version="v1", share=0.5, salt="mp")
        request = json.loads(body)
        expected = {u: "v1" if holdback.holds(str(u)) else "v2" for u in range(1, 41)}
        deadline = time.monotonic() + 10
        with httpx.Client(base_url=url, limits=fresh, timeout=30) as client:
            while True:
                served = {u: client.post("/v1/rank", json=request | {"user": request["user"] | {"user_id": u}}).json()
                          ["model_version"] for u in expected}
                if served == expected or time.monotonic() > deadline:
                    break
        assert served == expected
        assert set(served.values()) == {"v1", "v2"}
        result = CliRunner().invoke(app, ["student", "models", "end-holdback", "--url", url, "--token", TOKEN])
        assert result.exit_code == 0, result.output
        counts = re.findall(r'recdistill_request_seconds_count\{endpoint="rank",protocol="http",'
                            r'scenario="home"\} (\S+)', metrics_text)
        assert sum(float(c) for c in counts) == 120, "metrics aggregate requests served by both processes"
        pids = {p.pid for p in __import__("psutil").Process(process.pid).children(recursive=True)}
        assert len(pids) >= 2
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    records = [r for part in (tmp_path / "samples").iterdir() if part.is_dir()
               for r in sampled_records(tmp_path / "samples", part.name)]
    searched = [r for r in records if getattr(r, "traffic_source", None) == "search"]
    assert searched, "some requests from the 'search' source were sampled"
    assert {r.sampling_probability for r in searched} == {0.25}


def test_kill_9_of_the_supervisor_takes_its_workers_down(registry: Path, tmp_path: Path) -> None:
    import psutil

    port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "recdistill"), "student", "serve", "--registry", str(registry),
               "--port", str(port), "--grpc-port", str(grpc_port), "--workers", "2",
               "--sample-log", str(tmp_path / "samples")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers: list[psutil.Process] = []
    try:
        wait_ready(url, process)
        workers = psutil.Process(process.pid).children(recursive=True)
        assert workers
        process.kill()  # SIGKILL: the supervisor gets no chance to stop its workers
        process.wait(timeout=10)
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"workers still serving after their supervisor died: {[p.pid for p in alive]}"
    finally:
        process.kill()
        for worker in workers:  # whatever the outcome, nothing is left running
            if worker.is_running():
                worker.kill()
    # The port is free again: a restart binds it and serves.
    one_process = [part for part in command if part not in ("--workers", "2")]
    restart = subprocess.Popen(one_process, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(url, restart)
        assert httpx.post(f"{url}/v1/rank", content=EXAMPLE.read_bytes(), timeout=30).status_code == 200
    finally:
        restart.send_signal(signal.SIGTERM)
        restart.wait(timeout=30)
