"""The sample log on Redis Streams end to end: a real student server writes to a real Valkey, a real Triton
teacher labels, stream workers train; a worker dies and another takes over, a writer duplicates a record,
the broker goes down under traffic."""

from __future__ import annotations

import asyncio
import math
import re
import time
from pathlib import Path

import httpx
import pytest
import redis

from distill_worker.labels import LabelStore
from distill_worker.settings import DistillConfig, StreamConfig, TeacherClientSettings
from distill_worker.stream import StreamPhase, StreamTrainer
from distill_worker.teacher_client import TeacherClient
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.features.encoder import Encoder
from recdistill.core.samplelog.redis import RedisLogConfig, RedisStreamSource
from recdistill.demo.valkey import LocalValkey
from tests.conftest import RunningTriton
from tests.distill_worker.test_stream_phase import _replay
from tests.student_server.conftest import make_settings, run_server

pytestmark = pytest.mark.e2e
FAR_FUTURE = math.inf


async def _until(condition, timeout_s: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}(?:\{{{re.escape(wanted)}\}})? ([0-9.e+-]+)$" if labels else \
        rf"^{re.escape(name)}(?:\{{\}})? ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_a_standby_takes_over_a_dead_workers_entries_and_each_sample_is_trained_once(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, registry: Path, tmp_path: Path, valkey: LocalValkey
) -> None:
    events = ml100k.split("test")[:60].tolist()
    first, second = events[:30], events[30:]
    config = RedisLogConfig(valkey.url)
    broker = redis.Redis.from_url(valkey.url)
    state_dir = tmp_path / "worker"  # shared by the workers (a volume in Kubernetes)
    teacher = TeacherClient(TeacherClientSettings(url=triton_teacher.grpc_url, teacher_version="tiny-1"),
                            Encoder(ml100k.schema, "teacher"))
    store = LabelStore(state_dir / "labels.sqlite")

    def worker(name: str) -> StreamPhase:
        trainer = StreamTrainer(ml100k, None, DistillConfig(), StreamConfig(join_window_s=0.0), teacher, store)
        return StreamPhase(trainer, RedisStreamSource(config, name), state_dir)

    settings = make_settings(registry, tmp_path, sampling_rate=1.0, sample_log=valkey.url)
    try:
        async with run_server(settings) as server, httpx.AsyncClient(base_url=server.http_url) as client:
            await _replay(client, ml100k, first, feedback_for=set(first[:10]))
            await _until(lambda: broker.xlen(config.stream) == 40)
            active = worker("worker-1")
            assert (await active.step(now=FAR_FUTURE)).trained == 30

            await _replay(client, ml100k, second, feedback_for=set(second[:5]))
            await _until(lambda: broker.xlen(config.stream) == 75)
        # A writer that retried a batch whose reply it lost: one record twice in the stream.
        _, fields = broker.xrange(config.stream, count=1)[0]
        broker.xadd(config.stream, fields)
        written = broker.xlen(config.stream)
        assert written == 76

        # worker-1 reads and trains the second half, then dies before its checkpoint (kill -9).
        crashed = worker("worker-1")
        crashed.consumer.consume()
        await crashed.train_due(FAR_FUTURE)
        del crashed
        assert broker.xpending(config.stream, config.group)["pending"] == 36

        # worker-2 restores the last checkpoint, claims worker-1's pending entries and trains them.
        standby = worker("worker-2")
        assert standby.state.examples_trained == 30
        await standby.step(now=FAR_FUTURE)
        state = standby.state
        assert state.examples_trained == 60, "every sampled request trained exactly once"
        assert state.duplicates == 1
        assert state.records_consumed == written
        assert state.records_consumed == state.examples_trained + 15 + state.duplicates + state.dead_lettered
        assert state.feedback_joined == 15
        assert state.waiting == {}
        assert broker.xpending(config.stream, config.group)["pending"] == 0
        idle = await standby.step(now=FAR_FUTURE)
        assert (idle.read, idle.trained) == (0, 0)
    finally:
        await teacher.close()
        store.close()


async def test_ranking_never_waits_on_a_broker_that_is_down_and_the_log_resumes_by_itself(
    ml100k: PreparedDataset, registry: Path, tmp_path: Path, valkey: LocalValkey
) -> None:
    config = RedisLogConfig(valkey.url)
    broker = redis.Redis.from_url(valkey.url)
    settings = make_settings(registry, tmp_path, sampling_rate=1.0, sample_log=valkey.url, sample_buffer=15)
    events = ml100k.split("test")[:25].tolist()
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.http_url) as client:
        async def metrics() -> str:
            return (await client.get("/metrics")).text

        dropped_before = _metric(await metrics(), "recdistill_dropped_records_total", kind="request",
                                 reason="buffer_full")
        await _replay(client, ml100k, events[:5], feedback_for=set())
        await _until(lambda: broker.xlen(config.stream) == 5)

        valkey.stop()
        started = time.perf_counter()
        await _replay(client, ml100k, events[5:], feedback_for=set())  # 20 requests, each answered 200
        assert time.perf_counter() - started < 10
        # Feedback is not buffered: the sender is told to retry.
        refused = await client.post("/v1/feedback", json={"request_id": f"event-{events[6]}", "item_id": "1",
                                                          "label": 1})
        assert refused.status_code == 503
        assert refused.headers.get("retry-after")
        text = ""

        async def buffered() -> float:
            nonlocal text
            text = await metrics()
            return _metric(text, "recdistill_sample_buffered")

        deadline = time.monotonic() + 30
        while await buffered() != 15:
            assert time.monotonic() < deadline, text
            await asyncio.sleep(0.1)
        assert _metric(text, "recdistill_dropped_records_total", kind="request", reason="buffer_full") \
            - dropped_before == 5
        assert _metric(text, "recdistill_sample_log_up") == 0

        valkey.start()  # same port, same append-only file
        await _until(lambda: broker.xlen(config.stream) == 20)
        deadline = time.monotonic() + 30
        while await buffered() != 0:
            assert time.monotonic() < deadline, text
            await asyncio.sleep(0.1)
        assert _metric(text, "recdistill_sample_log_up") == 1
        # Counts add up: 25 sampled = 20 in the stream + 5 dropped (counted), none silently lost.
        assert broker.xlen(config.stream) + 5 == 25
