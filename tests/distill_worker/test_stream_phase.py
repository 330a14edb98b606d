"""The streaming phase on real sampled traffic: a real student server writes the sample log, a real
Triton teacher labels, the worker trains incrementally, survives kills, and promotes."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import asdict
from pathlib import Path

import httpx
import pytest

from distill_worker.labels import LabelStore
from distill_worker.promote import publish_and_promote
from distill_worker.settings import DistillConfig, GateConfig, StreamConfig, TeacherClientSettings, WorkerSettings
from distill_worker.stream import CONSUMER, StreamPhase, StreamTrainer, stream_main
from distill_worker.teacher_client import TeacherClient
from recdistill.core.artifact import read_manifest, read_state
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.features.encoder import Encoder
from recdistill.core.processes import free_port
from recdistill.core.samplelog import SampleLog
from recdistill.core.training import EncodedSplit
from tests.conftest import RunningTriton
from tests.student_server.conftest import TOKEN, make_settings, run_server

pytestmark = pytest.mark.e2e
FAR_FUTURE = math.inf


async def _replay(client: httpx.AsyncClient, dataset: PreparedDataset, events: list[int],
                  feedback_for: set[int]) -> dict[int, str]:
    """Each event ranked (feedback with the id the server gave it); returns event -> that id."""
    served: dict[int, str] = {}
    for event in events:
        body = dataset.to_request(event, "slate", negatives=9)
        response = await client.post("/v1/rank", json=body)
        assert response.status_code == 200
        served[event] = response.json()["request_id"]
        if event in feedback_for:
            item = body["candidates"][0]["item_id"]
            feedback = {"request_id": served[event], "item_id": item, "label": 1}
            assert (await client.post("/v1/feedback", json=feedback)).status_code == 202
    return served


def _total_records(root: Path) -> int:
    return sum(SampleLog(p).end_offset() for p in root.iterdir() if p.is_dir())


async def _written(root: Path, records: int, timeout_s: float = 30.0) -> None:
    """Wait until the server's writer thread has put `records` records in the sample log (sampled requests
    are written behind the response, asynchronously)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while _total_records(root) < records:
        assert asyncio.get_running_loop().time() < deadline, f"{_total_records(root)} of {records} records written"
        await asyncio.sleep(0.05)


async def test_stream_trains_each_record_once_across_kills_and_promotes(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    events = ml100k.split("test")[:60].tolist()
    first, second = events[:30], events[30:]
    samples, state_dir = tmp_path / "samples", tmp_path / "worker"
    teacher = TeacherClient(TeacherClientSettings(url=triton_teacher.grpc_url, teacher_version="tiny-1"),
                            Encoder(ml100k.schema, "teacher"))
    store = LabelStore(state_dir / "labels.sqlite")
    distill, config = DistillConfig(), StreamConfig(join_window_s=0.0, export_every=50)
    holdout = EncodedSplit.build(ml100k, Encoder(ml100k.schema, "student"), "valid", "slate", limit=1_000)
    settings = make_settings(registry, tmp_path, sampling_rate=1.0)
    worker_settings = WorkerSettings(data=ml100k.directory, registry=registry, state_dir=state_dir,
                                     server_url=f"http://{settings.host}:{settings.port}", admin_token=TOKEN,
                                     sample_log=samples, gate=GateConfig(auc_tolerance=1.0),
                                     teacher=teacher.settings)

    windows = []

    def publisher(model, window):  # noqa: ANN001, ANN202
        windows.append(window)
        return publish_and_promote(worker_settings, model, holdout, window, asdict(distill))

    def new_worker() -> StreamPhase:
        return StreamPhase(StreamTrainer(ml100k, None, distill, config, teacher, store), samples, state_dir,
                           publisher=publisher)

    try:
        async with run_server(settings) as server, httpx.AsyncClient(base_url=server.http_url) as client:
            ids = await _replay(client, ml100k, first, feedback_for=set(first[:10]))
            await _written(samples, 30 + 10)
            worker = new_worker()
            step = await worker.step(now=FAR_FUTURE)
            assert step.trained == 30
            assert worker.state.feedback_joined == 10

            await _replay(client, ml100k, second, feedback_for=set(second[:5]))
            await _written(samples, 60 + 15)
            # Killed after training but before its checkpoint: the next worker redoes that work.
            crashed = new_worker()
            crashed.consumer.consume()
            await crashed.train_due(FAR_FUTURE)
            del crashed
            # Killed after the checkpoint but before committing the offsets to the log.
            resumed = new_worker()
            assert resumed.state.examples_trained == 30
            resumed.consumer.consume()
            assert await resumed.train_due(FAR_FUTURE) == 30
            resumed.checkpoint()
            del resumed
            final = new_worker()
            step = await final.step(now=FAR_FUTURE)
            assert step.read == 0
            assert step.trained == 0
            state = final.state
            assert state.examples_trained == 60, "every sampled request trained exactly once"
            assert state.records_consumed == _total_records(samples) == 60 + 15
            assert state.feedback_joined == 15
            assert state.waiting == {}
            for partition, offset in state.offsets.items():
                assert SampleLog(samples / partition).committed(CONSUMER) == offset
            stamp = (state_dir / "stream.pt").stat().st_mtime_ns
            idle = await final.step(now=FAR_FUTURE)
            assert (idle.read, idle.trained) == (0, 0)
            assert (state_dir / "stream.pt").stat().st_mtime_ns == stamp, "an idle step rewrites nothing"

            # Feedback for a request that was trained already is counted as late, not silently joined.
            late = {"request_id": ids[first[-1]], "item_id": "1", "label": 1}
            assert (await client.post("/v1/feedback", json=late)).status_code == 202
            await final.step(now=FAR_FUTURE)
            assert final.state.unmatched_feedback == 1

            # 60 trained examples >= export_every: a version was exported, gated, published and promoted.
            published = await final.step(now=FAR_FUTURE)
            versions = final.state.versions_promoted
            assert versions, published
            assert windows[-1].sampled_requests == 60, "its window holds the requests trained across the restarts"
            assert read_manifest(registry, versions[-1]).data_window == windows[-1]
            check = ml100k.to_request(events[0], "slate") | {"request_id": "after-promotion"}
            served = await client.post("/v1/rank", json=check)
            assert served.json()["model_version"] == versions[-1] == read_state(registry).active
    finally:
        await teacher.close()
        store.close()

    # The CLI's entry point, from scratch on the same log (labels come from the store written above).
    fresh = worker_settings.model_copy(update={"state_dir": tmp_path / "worker-2", "server_url": None,
                                               "max_holdout_events": 500})
    (tmp_path / "worker-2").mkdir()
    (state_dir / "labels.sqlite").rename(tmp_path / "worker-2" / "labels.sqlite")
    report, _ = await stream_main(fresh.model_copy(update={"stream": StreamConfig(join_window_s=0.0)}), steps=1)
    assert report.examples_trained == 61  # the 60 replayed requests and the check after the promotion
    assert report.label_hit_rate == pytest.approx(60 / 61)  # only the check request is new to the store


async def test_teacher_down_fails_the_step_and_loses_nothing(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    from distill_worker.teacher_client import TeacherError

    events = ml100k.split("test")[100:120].tolist()
    samples, state_dir = tmp_path / "samples", tmp_path / "worker"
    async with run_server(make_settings(registry, tmp_path, sampling_rate=1.0)) as server, \
            httpx.AsyncClient(base_url=server.http_url) as client:
        await _replay(client, ml100k, events, feedback_for=set(events[:4]))
    store = LabelStore(state_dir / "labels.sqlite")
    encoder = Encoder(ml100k.schema, "teacher")
    dead = TeacherClient(TeacherClientSettings(url=f"127.0.0.1:{free_port()}", retries=1, backoff_base_s=0.05,
                                               timeout_s=2), encoder)
    config = StreamConfig(join_window_s=0.0)
    worker = StreamPhase(StreamTrainer(ml100k, None, DistillConfig(), config, dead, store), samples, state_dir)
    with pytest.raises(TeacherError):
        await worker.step(now=FAR_FUTURE)
    await dead.close()
    assert not (state_dir / "stream.pt").exists(), "a failed step leaves no checkpoint behind"
    live = TeacherClient(TeacherClientSettings(url=triton_teacher.grpc_url, teacher_version="tiny-1",
                                               teacher_data_end_ts=0.0), encoder)
    try:
        recovered = StreamPhase(StreamTrainer(ml100k, None, DistillConfig(), config, live, store), samples, state_dir)
        step = await recovered.step(now=FAR_FUTURE)
    finally:
        await live.close()
        store.close()
    assert step.trained == 20
    assert recovered.state.records_consumed == _total_records(samples) == 24
    assert recovered.state.feedback_joined == 4
    from distill_worker.stream.trainer import TEACHER_LAG

    newest = max(ml100k.events["timestamp"].to_numpy()[events])
    assert TEACHER_LAG._value.get() == pytest.approx(newest)  # lag from a training window ending at 0


async def test_batch_then_stream_promotes_twice(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    from distill_worker.batch import run_batch
    from distill_worker.student import BATCH_STUDENT

    state_dir = tmp_path / "worker"
    server_settings = make_settings(registry, tmp_path, sampling_rate=1.0)
    url = f"http://{server_settings.host}:{server_settings.port}"
    settings = WorkerSettings(data=ml100k.directory, registry=registry, state_dir=state_dir, server_url=url,
                              admin_token=TOKEN, max_train_events=2_000, max_holdout_events=1_000,
                              sample_log=tmp_path / "samples", gate=GateConfig(auc_tolerance=1.0),
                              teacher=TeacherClientSettings(url=triton_teacher.grpc_url, teacher_version="tiny-1"),
                              distill=DistillConfig(epochs=1, patience=1),
                              stream=StreamConfig(join_window_s=0.0, export_every=20))
    async with run_server(server_settings) as server, httpx.AsyncClient(base_url=server.http_url) as client:
        batch = await run_batch(settings)
        assert batch.published is not None
        assert batch.published.version is not None
        assert (state_dir / BATCH_STUDENT).exists()
        replayed_at = time.time()
        await _replay(client, ml100k, ml100k.split("test")[200:230].tolist(), feedback_for=set())
        report, _ = await stream_main(settings, steps=1)
        took = time.time() - replayed_at
        served = (await client.post("/v1/rank", json=ml100k.to_request(0, "slate") | {"request_id": "x"})).json()
    assert report.examples_trained == 30
    versions = report.versions_promoted
    assert len(versions) == 1
    assert versions[0] != batch.published.version
    # Freshness: each of the 30 requests, from being served to the version trained on it going live.
    assert report.freshness_s is not None
    assert report.freshness_s.requests == 30
    assert 0 < report.freshness_s.p50 <= report.freshness_s.p95 <= took
    # The streamed version's manifest says what it was trained on: the 30 requests, with the distill settings.
    manifest = read_manifest(registry, versions[0])
    assert manifest.data_window.sampled_requests == 30
    assert manifest.data_window.first_served_unix <= manifest.data_window.last_served_unix
    assert manifest.distill == asdict(settings.distill)
    assert served["model_version"] == versions[0] == read_state(registry).active
