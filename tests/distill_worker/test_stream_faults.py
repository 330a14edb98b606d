"""The stream worker under faults, with real components: a poison record in the log, a record the real
teacher refuses, the teacher stopped and restarted. Each ends with the worker alive and counts that add
up: records written = consumed, and every sampled request is trained once or dead-lettered once."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from distill_worker.labels import LabelStore
from distill_worker.settings import DistillConfig, StreamConfig, TeacherClientSettings
from distill_worker.stream import StreamPhase, StreamTrainer
from distill_worker.teacher_client import TEACHER_UP, TeacherClient
from recdistill.core.contracts.records import FeedbackRecord, SampledRequest, encode_record
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.features.encoder import Encoder
from recdistill.core.processes import free_port
from recdistill.core.samplelog import SampleLog
from teacher_service.launcher import teacher_process
from tests.student_server.conftest import client_ids, make_settings, run_server, sampled_records

pytestmark = pytest.mark.e2e
FAR_FUTURE = math.inf
PACKED = SampledRequest.pack(np.full(10, 0.5), np.arange(10))  # (scores, positions) of a 10-candidate slate


def _f4(values: object) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


def _i4(values: object) -> bytes:
    return np.asarray(list(values), dtype="<i4").tobytes()  # type: ignore[call-overload]


async def _serve_requests(registry: Path, tmp_path: Path, dataset: PreparedDataset, events: list[int],
                          candidates: dict[int, int] | None = None) -> None:
    """Real sampled traffic: each event's slate (`candidates[event]` negatives, default 9) through the server."""
    async with run_server(make_settings(registry, tmp_path, sampling_rate=1.0)) as server, \
            httpx.AsyncClient(base_url=server.http_url) as client:
        for event in events:
            body = dataset.to_request(event, "slate", negatives=(candidates or {}).get(event, 9))
            assert (await client.post("/v1/rank", json=body)).status_code == 200


def _client(dataset: PreparedDataset, url: str, **overrides: object) -> TeacherClient:
    return TeacherClient(TeacherClientSettings(url=url, teacher_version="tiny-1", **overrides),
                         Encoder(dataset.schema, "teacher"))


async def test_a_poison_record_and_a_refused_request_are_dead_lettered(
    tiny_teacher: Path, ml100k: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    events = ml100k.split("test")[300:320].tolist()
    # Two requests with 30 candidates, which this teacher (at most 20) refuses; the others have 10.
    await _serve_requests(registry, tmp_path, ml100k, events, {events[3]: 29, events[11]: 29})
    samples = tmp_path / "samples"
    SampleLog(samples / "test-0").append([b"\x93garbage that is no record"])  # a poison record
    written = sum(len(SampleLog(p).read(0, 1 << 20)) for p in samples.iterdir() if p.is_dir())
    state_dir = tmp_path / "worker"
    with teacher_process(tiny_teacher, log_path=tmp_path / "triton.log",
                         env={"TEACHER_MAX_CANDIDATES": "20"}) as (endpoints, _):
        client, store = _client(ml100k, endpoints.grpc_url), LabelStore(state_dir / "labels.sqlite")
        try:
            phase = StreamPhase(StreamTrainer(ml100k, None, DistillConfig(), StreamConfig(join_window_s=0.0),
                                              client, store), samples, state_dir)
            state = await phase.run(until=lambda: True, clock=lambda: FAR_FUTURE)
        finally:
            await client.close()
            store.close()
    assert state.records_consumed == written == 21
    assert state.examples_trained == 18
    assert state.dead_lettered == 3
    assert state.waiting == {}
    lines = [json.loads(line) for line in (state_dir / "dead-letter.jsonl").read_text().splitlines()]
    ids = client_ids(samples)
    assert sorted(ids.get(line["request_id"]) or "" for line in lines) == ["", f"event-{events[3]}",
                                                                            f"event-{events[11]}"]
    assert any("refused" in line["reason"] for line in lines)
    assert any("not a sample-log record" in line["reason"] for line in lines)


async def test_the_stream_waits_out_a_30_s_teacher_outage_and_resumes(
    tiny_teacher: Path, ml100k: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    events = ml100k.split("test")[400:460].tolist()
    samples, state_dir, port = tmp_path / "samples", tmp_path / "worker", free_port()
    client = _client(ml100k, f"127.0.0.1:{port}", retries=1, backoff_base_s=0.05, timeout_s=2, breaker_failures=2,
                     breaker_reset_s=0.5)
    store = LabelStore(state_dir / "labels.sqlite")
    config = StreamConfig(join_window_s=0.0, idle_s=0.1, outage_backoff_max_s=2.0)
    phase = StreamPhase(StreamTrainer(ml100k, None, DistillConfig(), config, client, store), samples, state_dir)
    traffic_over = asyncio.Event()

    async def wait_for(condition, what: str, timeout_s: float = 120) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.1)

    try:
        stream = asyncio.create_task(phase.run(until=traffic_over.is_set, clock=lambda: FAR_FUTURE))
        with teacher_process(tiny_teacher, grpc_port=port, log_path=tmp_path / "triton-1.log"):
            await _serve_requests(registry, tmp_path, ml100k, events[:30])
            await wait_for(lambda: phase.state.examples_trained == 30, "the first half is trained")
        # The teacher is stopped for 30 s while traffic keeps arriving: the worker waits instead of dying.
        stopped = time.monotonic()
        await _serve_requests(registry, tmp_path, ml100k, events[30:])
        while time.monotonic() - stopped < 30:
            assert not stream.done(), "the worker must outlive a teacher outage"
            await asyncio.sleep(0.5)
        assert phase.state.examples_trained == 30, "nothing is trained without its teacher labels"
        assert phase.state.records_consumed == 60, "the log is still read during the outage"
        assert TEACHER_UP._value.get() == 0, "the outage is reported"
        with teacher_process(tiny_teacher, grpc_port=port, log_path=tmp_path / "triton-2.log"):
            traffic_over.set()
            state = await asyncio.wait_for(stream, timeout=120)
    finally:
        await client.close()
        store.close()
    assert state.examples_trained == 60, "every sampled request trained once, after the teacher came back"
    assert TEACHER_UP._value.get() == 1
    assert state.records_consumed == len(sampled_records(samples)) == 60
    assert state.dead_lettered == 0


async def test_a_stopped_teacher_is_reported_down_and_the_stream_resumes_within_10_s_of_its_return(
    tiny_teacher: Path, ml100k: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    """SIGSTOP keeps the teacher's port open and answers nothing: `teacher_up` stayed 1 (every step that
    did not call the teacher set it), and after SIGCONT the worker needed more than 30 s to train again.
    Now the readiness probe's deadline reports it down, and its return wakes the stream. Default client
    settings (a 30 s request deadline, 6 retries)."""
    import psutil

    events = ml100k.split("test")[800:840].tolist()
    samples, state_dir, port = tmp_path / "samples", tmp_path / "worker", free_port()
    client = _client(ml100k, f"127.0.0.1:{port}")
    store = LabelStore(state_dir / "labels.sqlite")
    phase = StreamPhase(StreamTrainer(ml100k, None, DistillConfig(), StreamConfig(join_window_s=0.0, idle_s=0.1),
                                      client, store), samples, state_dir)
    traffic_over = asyncio.Event()

    async def wait_for(condition, what: str, timeout_s: float) -> float:  # noqa: ANN001
        started = time.monotonic()
        while not condition():
            assert time.monotonic() - started < timeout_s, what
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    try:
        with teacher_process(tiny_teacher, grpc_port=port, log_path=tmp_path / "triton.log") as (_, process):
            stream = asyncio.create_task(phase.run(until=traffic_over.is_set, clock=lambda: FAR_FUTURE))
            await _serve_requests(registry, tmp_path, ml100k, events[:20])
            await wait_for(lambda: phase.state.examples_trained == 20, "the first half is trained", 120)
            assert TEACHER_UP._value.get() == 1
            frozen = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
            for member in frozen:
                member.suspend()
            try:
                await _serve_requests(registry, tmp_path, ml100k, events[20:])
                await wait_for(lambda: TEACHER_UP._value.get() == 0, "a stopped teacher is reported down", 10)
                await asyncio.sleep(5)
                assert phase.state.examples_trained == 20, "nothing is trained without its teacher labels"
                assert not stream.done()
            finally:
                for member in frozen:
                    member.resume()
            took = await wait_for(lambda: phase.state.examples_trained == 40, "training resumes", 10)
            print(f"trained again {took:.1f} s after the teacher's return")
            assert TEACHER_UP._value.get() == 1
            traffic_over.set()
            state = await asyncio.wait_for(stream, timeout=60)
    finally:
        await client.close()
        store.close()
    assert state.records_consumed == len(sampled_records(samples)) == 40
    assert (state.examples_trained, state.dead_lettered) == (40, 0)


def test_a_backlog_never_turns_clicks_into_negatives(ml100k: PreparedDataset, tmp_path: Path) -> None:
    """A worker 2x behind (a step reads 10 records of a 120-record backlog): a request is trained only when
    its join window has closed in event time, so every click that arrived within it is joined."""
    samples = tmp_path / "samples"
    log = SampleLog(samples / "server-0")
    events = ml100k.split("test")[500:560].tolist()
    payloads, clicks = [], []
    for i, event in enumerate(events):
        body = ml100k.to_request(event, "slate", negatives=9)
        served = 1_000.0 + i  # one request a second; each click comes 1.5 s after its request
        payloads.append(encode_record(SampledRequest(
            request_id=body["request_id"], ts=served, request_ts=served, model_version="v1",
            sampling_probability=1.0, request=json.dumps(body).encode(),
            scores=PACKED[0], positions=PACKED[1])))
        clicks.append((served + 1.5, encode_record(FeedbackRecord(
            request_id=body["request_id"], item_id=str(body["candidates"][0]["item_id"]), label=1.0,
            ts=served + 1.5, received_ts=served + 1.5))))
        payloads += [click for when, click in clicks if when <= served]  # in arrival order
        clicks = [(when, click) for when, click in clicks if when > served]
    payloads += [click for _, click in clicks]
    log.append(payloads)
    phase = StreamPhase(StreamTrainer(ml100k, None, DistillConfig(use_teacher=False),
                                      StreamConfig(join_window_s=2.0, max_records=10)), samples, tmp_path / "worker")
    steps = 0
    while steps < 100:
        result = asyncio.run(phase.step(now=FAR_FUTURE))
        steps += 1
        if not result.read and not phase.state.waiting:
            break
    state = phase.state
    assert state.records_consumed == len(payloads) == 120
    assert state.examples_trained == 60
    assert (state.feedback_joined, state.unmatched_feedback) == (60, 0), "no click outrun by its request's training"
    assert steps >= 12, "the backlog was read 10 records at a time"


@pytest.mark.parametrize("train_on_exploration", [False, True])
def test_the_exploration_slice_stays_out_of_training_and_every_record_is_counted(
        ml100k: PreparedDataset, tmp_path: Path, train_on_exploration: bool) -> None:
    """Requests served in a random order are an evaluation set: held out of training (and counted), their clicks
    unmatched; with `train_on_exploration` they are trained like the rest."""
    samples = tmp_path / "samples"
    events = ml100k.split("test")[600:640].tolist()
    payloads = []
    for i, event in enumerate(events):
        body = ml100k.to_request(event, "slate", negatives=9)
        payloads.append(encode_record(SampledRequest(
            request_id=body["request_id"], ts=1_000.0 + i, request_ts=1_000.0 + i, model_version="v1",
            sampling_probability=1.0, request=json.dumps(body).encode(),
            scores=PACKED[0], positions=PACKED[1], policy="random" if i % 4 == 0 else "model")))
        payloads.append(encode_record(FeedbackRecord(
            request_id=body["request_id"], item_id=str(body["candidates"][0]["item_id"]), label=1.0,
            ts=1_000.5 + i, received_ts=1_000.5 + i)))
    SampleLog(samples / "server-0").append(payloads)
    config = StreamConfig(join_window_s=0.0, train_on_exploration=train_on_exploration)
    phase = StreamPhase(StreamTrainer(ml100k, None, DistillConfig(use_teacher=False), config), samples,
                        tmp_path / "worker")
    state = asyncio.run(phase.run(until=lambda: True, clock=lambda: FAR_FUTURE))
    held = 0 if train_on_exploration else 10
    assert state.records_consumed == len(payloads) == 80
    assert (state.exploration_held_out, state.examples_trained) == (held, 40 - held)
    assert (state.feedback_joined, state.unmatched_feedback) == (40 - held, held)


def _poisoned(record: SampledRequest | FeedbackRecord, **fields: object) -> bytes:
    """A record whose fields disagree, written as a broken or hostile producer would."""
    import msgspec

    return msgspec.msgpack.encode(msgspec.to_builtins(record, builtin_types=(bytes,)) | fields)


def test_records_whose_fields_disagree_are_dead_lettered_not_trained(ml100k: PreparedDataset, tmp_path: Path) -> None:
    """More positions than candidates stopped the worker (`could not broadcast`, on every restart); a `ts` of
    NaN or infinity was never released; scores not packed in 4-byte values, a request that is not JSON, a
    negative position. Each is dead-lettered with its reason; the rest train; counts add up."""
    samples = tmp_path / "samples"
    payloads, good = [], 0
    for i, event in enumerate(ml100k.split("test")[700:720].tolist()):
        body = ml100k.to_request(event, "slate", negatives=9)
        record = SampledRequest(
            request_id=body["request_id"], ts=1_000.0 + i, request_ts=1_000.0 + i, model_version="v1",
            sampling_probability=1.0, request=json.dumps(body).encode(),
            scores=PACKED[0], positions=PACKED[1])
        poison = {0: {"positions": _i4(range(12))}, 1: {"ts": math.nan}, 2: {"ts": math.inf},
                  3: {"request_ts": -math.inf}, 4: {"scores": _f4([0.5] * 3)}, 5: {"positions": _i4([0] * 10)},
                  6: {"scores": _f4([math.nan] * 10)}, 7: {"scores": b"\x00" * 7}, 8: {"request": b"{"},
                  9: {"positions": _i4([*range(9), -1])}}.get(i)
        payloads.append(encode_record(record) if poison is None else _poisoned(record, **poison))
        good += poison is None
    feedback = FeedbackRecord(request_id="x", item_id="1", label=1.0, ts=1.0, received_ts=1.0)
    payloads += [encode_record(feedback), _poisoned(feedback, ts=math.nan)]
    SampleLog(samples / "server-0").append(payloads)
    phase = StreamPhase(StreamTrainer(ml100k, None, DistillConfig(use_teacher=False), StreamConfig(join_window_s=0.0)),
                        samples, tmp_path / "worker")
    for _ in range(20):  # bounded: a record that is never released must fail the test, not hang it
        result = asyncio.run(phase.step(now=FAR_FUTURE))
        if not result.read and not phase.state.waiting:
            break
    state = phase.state
    assert not state.waiting, "nothing is left waiting forever"
    assert state.records_consumed == len(payloads) == 22
    assert state.examples_trained == good == 10
    assert state.dead_lettered == 11
    lines = (tmp_path / "worker" / "dead-letter.jsonl").read_text().splitlines()
    reasons = [json.loads(line)["reason"] for line in lines]
    assert any("positions" in r for r in reasons)
    assert any("finite" in r for r in reasons)
    assert any("4-byte" in r for r in reasons)
    assert any("JSON" in r for r in reasons)
