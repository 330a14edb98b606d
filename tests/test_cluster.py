"""A cluster on one box, every part its own process: Valkey, the teacher on Triton, three student replicas
and two stream workers (one a hot standby), sharing the sample log and the active-version pointer through
Valkey. Traffic is spread over the replicas; then the active worker is killed (-9), Valkey is stopped and
restarted under traffic, a version is activated through one replica, and one replica is killed (-9).
Counts must add up by sample id at the end."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import msgspec
import pytest
import redis
import torch

from recdistill.core.contracts.worker import StreamCheckpoint
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.processes import child_process
from recdistill.core.samplelog.redis import RedisLogConfig, RedisTrainerLease
from recdistill.demo.valkey import LocalValkey
from student_server.launcher import student_process
from tests.conftest import RunningTriton

pytestmark = pytest.mark.e2e
RECDISTILL = str(Path(sys.executable).parent / "recdistill")
TOKEN = "cluster-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@contextmanager
def _replica(index: int, registry: Path, valkey: LocalValkey, logs: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    with student_process(registry, valkey.url, "--registry-store", valkey.url, "--sampling-rate", "1",
                         "--server-id", f"replica-{index}", token=TOKEN, log_path=logs / f"replica-{index}.log",
                         env={"STUDENT_STATE_POLL_S": "2.0"}) as (server, process):
        yield server.http_url, process


@contextmanager
def _worker(name: str, ml100k: PreparedDataset, triton: RunningTriton, registry: Path, valkey: LocalValkey,
            state_dir: Path, logs: Path) -> Iterator[subprocess.Popen]:
    command = [RECDISTILL, "worker", "run", "--mode", "stream", "--sample-log", valkey.url, "--worker-id", name,
               "--data", str(ml100k.directory), "--state-dir", str(state_dir), "--registry", str(registry),
               "--teacher-url", triton.grpc_url, "--teacher-version", "tiny-1", "--join-window-s", "0",
               "--export-every", "1000000"]
    env = {"WORKER_MAX_HOLDOUT_EVENTS": "300", "WORKER_LEASE_TTL_S": "3", "WORKER_STREAM__AUDIT_TRAINED_IDS": "true",
           "WORKER_STREAM__IDLE_S": "0.2"}
    with child_process(command, lambda: True, f"worker {name}", 60, logs / f"{name}.log", env) as process:
        yield process


def _checkpoint(state_dir: Path) -> dict:
    path = state_dir / "stream.pt"
    if not path.exists():
        return {}
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return msgspec.to_builtins(StreamCheckpoint.from_torch(saved, str(path)).state)


async def _wait(condition, what: str, timeout_s: float = 120.0) -> float:  # noqa: ANN001
    started = time.monotonic()
    while not await asyncio.to_thread(condition):
        assert time.monotonic() - started < timeout_s, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_a_cluster_on_one_box_survives_kills_and_a_broker_restart(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, registry: Path, tmp_path: Path, valkey: LocalValkey
) -> None:
    logs, state_dir = tmp_path / "logs", tmp_path / "worker"  # the workers share a state directory (a volume)
    logs.mkdir()
    config = RedisLogConfig(valkey.url)
    broker = redis.Redis.from_url(valkey.url)
    events = iter(ml100k.split("test")[:150].tolist())
    served: dict[str, str] = {}  # request id -> the replica that answered it
    versions_served: dict[str, str] = {}  # request id -> the model version that answered it
    clicks: list[str] = []
    failures: list[str] = []

    with ExitStack() as stack:
        replicas = [stack.enter_context(_replica(i, registry, valkey, logs)) for i in range(3)]
        workers = {name: stack.enter_context(_worker(name, ml100k, triton_teacher, registry, valkey, state_dir,
                                                     logs)) for name in ("worker-a", "worker-b")}
        async with httpx.AsyncClient(timeout=10) as client:
            async def traffic(count: int, urls: list[str]) -> None:
                """`count` requests round robin over `urls`, a click on every third; about 40 per second."""
                for url, event in zip(itertools.cycle(urls), itertools.islice(events, count), strict=False):
                    body = ml100k.to_request(event, "slate", negatives=9)
                    response = await client.post(f"{url}/v1/rank", json=body)
                    if response.status_code != 200:
                        failures.append(f"{url}: {response.status_code} {response.text[:200]}")
                        continue
                    request_id = response.json()["request_id"]  # the server's id: feedback is sent with it
                    served[request_id] = url
                    versions_served[request_id] = response.json()["model_version"]
                    if event % 3 == 0:
                        click = {"request_id": request_id, "item_id": body["candidates"][0]["item_id"], "label": 1}
                        if (await client.post(f"{url}/v1/feedback", json=click)).status_code == 202:
                            clicks.append(request_id)
                    await asyncio.sleep(0.025)

            urls = [url for url, _ in replicas]
            await traffic(60, urls)
            # Samples from every replica reach the one active worker.
            await _wait(lambda: _checkpoint(state_dir).get("examples_trained", 0) > 0, "the first training step")
            observer = RedisTrainerLease(config, "observer")
            holder = observer.holder()
            assert holder is not None
            active, standby = workers[holder], workers[({"worker-a", "worker-b"} - {holder}).pop()]

            # kill -9 of the active worker while traffic flows: the standby takes over within the lease.
            load = asyncio.create_task(traffic(30, urls))
            await asyncio.sleep(0.3)
            active.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(active.wait, 30) == -signal.SIGKILL
            await load
            await _wait(lambda: observer.holder() not in (None, holder),
                        "the standby to take the lease", 30)
            assert standby.poll() is None

            # Valkey stopped under traffic: the replicas keep ranking and buffer the samples, then resend them.
            written_before = broker.xlen(config.stream)
            valkey.stop()
            await traffic(30, urls)
            buffered = []
            for url in urls:
                text = (await client.get(f"{url}/metrics")).text
                buffered += [float(line.split()[-1]) for line in text.splitlines()
                             if line.startswith("recdistill_sample_buffered")]
            assert sum(buffered) > 0, "samples are buffered while the broker is down"
            valkey.start()  # same port, same append-only file
            expected_records = len(served) + len(clicks)
            await _wait(lambda: broker.xlen(config.stream) == expected_records, "the buffered samples", 60)
            assert broker.xlen(config.stream) > written_before

            # One activation through one replica's operator API reaches every replica.
            started = time.monotonic()
            response = await client.post(f"{urls[0]}/admin/versions/v2/activate", headers=HEADERS)
            assert response.status_code == 200, response.text

            def everyone_serves_v2() -> bool:  # as each replica reports it right after its swap
                replicas = httpx.get(f"{urls[1]}/admin/versions", headers=HEADERS).json()["replicas"]
                return len(replicas) == 3 and all(r["active"] == "v2" and not r["stale"] for r in replicas)

            await _wait(everyone_serves_v2, "every replica to serve v2", 30)
            activation_s = time.monotonic() - started
            before = len(served)
            await traffic(3, urls)
            assert {versions_served[r] for r in list(served)[before:]} == {"v2"}

            # kill -9 of one replica: the others keep serving.
            replicas[2][1].send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(replicas[2][1].wait, 30) == -signal.SIGKILL
            await traffic(30, urls[:2])

            # Everything written is trained, once, counted by sample id.
            records = len(served) + len(clicks)
            await _wait(lambda: _checkpoint(state_dir).get("records_consumed", 0) >= records
                        and not _checkpoint(state_dir).get("waiting"), "the standby to train everything", 120)
        state = _checkpoint(state_dir)

    print(f"activation reached 3 replicas in {activation_s:.2f}s")  # noqa: T201 - a measured figure for the log
    assert failures == [], failures
    trained = state["trained_ids"]
    assert len(trained) == len(set(trained)), "no sample trained twice"
    assert set(trained) == set(served), "no acknowledged sample lost"
    assert {served[r] for r in trained if r in served} == set(urls), "samples from every replica reach training"
    assert state["dead_lettered"] == 0
    assert state["records_consumed"] == records  # every record written, read once
    assert state["feedback_joined"] + state["unmatched_feedback"] == len(clicks)
