"""The labeller: every sampled request labelled by the teacher once, into a label log that every scenario's
trainer reads (`labels_from = "labeller"`) without calling the teacher; a restarted labeller does not ask again;
label records for requests the sample log does not hold, with the wrong number of candidates or a non-finite
probability are set aside with their reason and never trained on; a request the teacher refused is set aside by
the labeller and, from its record in the log, by the trainers. A real student server, a real Triton (its
own inference count is the teacher-call figure), file and Valkey logs."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from distill_worker.labeller import LABELLER_GROUP, labeller_main
from distill_worker.settings import DistillConfig, StreamConfig, TeacherClientSettings, WorkerSettings
from distill_worker.stream import StreamHooks, stream_main
from recdistill.core.contracts.labels import TeacherLabels, encode_labels
from recdistill.core.contracts.worker import StreamReport
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.dense import DenseCandidates
from recdistill.core.errors import ConfigError
from recdistill.core.samplelog import LogLocation, open_writer
from tests.conftest import RunningTriton
from tests.distill_worker.test_stream_phase import _written
from tests.student_server.conftest import client_ids, make_settings, run_server

pytestmark = pytest.mark.e2e


def _teacher_inferences(triton: RunningTriton) -> float:
    """Contexts Triton scored so far (its own counter, not the worker's)."""
    text = httpx.get(f"http://{triton.metrics_url}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               if family.name == "nv_inference_count" for sample in family.samples
               if sample.labels.get("model") == "teacher")


@pytest.fixture(params=["file", "redis"])
def logs(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(sample log, label log) on one backend."""
    if request.param == "file":
        return f"file:{tmp_path / 'samples'}", f"file:{tmp_path / 'labels'}"
    valkey = request.getfixturevalue("valkey")
    return valkey.url, f"{valkey.url}?stream=recdistill:labels"


async def _serve_two_scenarios(ml100k: PreparedDataset, registry: Path, tmp_path: Path, sample_log: str,
                               events: list[int]) -> None:
    """`events` ranked by the real server, alternating the two scenarios, every request sampled."""
    settings = make_settings(registry, tmp_path, sampling_rate=1.0).model_copy(update={"sample_log": sample_log})
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.http_url) as client:
        for index, event in enumerate(events):
            route = "/v1/rank" if index % 2 else "/v1/scenarios/related/rank"
            assert (await client.post(route, json=ml100k.to_request(event, "slate", negatives=9))).status_code == 200
    if sample_log.startswith("file:"):
        await _written(Path(sample_log.removeprefix("file:")), len(events))


def _reading_the_labeller(ml100k: PreparedDataset, triton: RunningTriton, tmp_path: Path, sample_log: str,
                          label_log: str) -> WorkerSettings:
    """A trainer's settings that read the labeller's label log (nothing published: no registry needed)."""
    return WorkerSettings(data=ml100k.directory, state_dir=tmp_path / "worker", sample_log=sample_log,
                          label_log=label_log, labels_from="labeller",
                          teacher=TeacherClientSettings(url=triton.grpc_url, teacher_version="tiny-1"),
                          distill=DistillConfig(epochs=1, patience=1), stream=StreamConfig(join_window_s=0.0))


async def test_one_labelling_serves_every_scenario_and_a_restart_asks_nothing_again(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, registry: Path, tmp_path: Path, logs: tuple[str, str]
) -> None:
    sample_log, label_log = logs
    events = ml100k.split("test")[400:440].tolist()
    await _serve_two_scenarios(ml100k, registry, tmp_path, sample_log, events)
    base = _reading_the_labeller(ml100k, triton_teacher, tmp_path, sample_log, label_log)
    before = _teacher_inferences(triton_teacher)

    async def trainer(scenario: str) -> StreamReport:
        settings = base.model_copy(update={"scenario": scenario})
        report, _ = await stream_main(settings, hooks=StreamHooks(until=lambda: True), publish=False)
        assert isinstance(report, StreamReport)
        return report

    # The trainers start first: they wait for the labeller (as for a teacher outage), then train.
    home, related, labelled = await asyncio.gather(trainer("home"), trainer("related"),
                                                   labeller_main(base, until=lambda: True))
    after_first = _teacher_inferences(triton_teacher)
    # A labeller whose committed position was lost (killed after appending, before committing) reads every
    # request again and finds every label in the log: no teacher call.
    if sample_log.startswith("file:"):
        for offset in Path(sample_log.removeprefix("file:")).glob(f"*/consumers/{LABELLER_GROUP}.offset"):
            offset.unlink()
    rerun = await labeller_main(base.model_copy(update={"worker_id": "labeller-2"}), until=lambda: True)
    assert after_first - before == len(events) == labelled.labelled == labelled.teacher_requests
    assert _teacher_inferences(triton_teacher) == after_first
    assert labelled.adds_up
    assert labelled.dead_lettered == 0
    assert (home.examples_trained, home.other_scenario) == (20, 20)
    assert (related.examples_trained, related.other_scenario) == (20, 20)
    assert home.label_version == related.label_version == "tiny-1"
    assert home.labels_dead_lettered == related.labels_dead_lettered == 0
    assert rerun.teacher_requests == 0
    assert rerun.adds_up
    if sample_log.startswith("file:"):
        assert rerun.already_labelled == len(events)
        # Only the labeller wrote: the trainers and the second labeller (nothing to ask) claimed no partition.
        assert len([p for p in Path(label_log.removeprefix("file:")).iterdir() if p.is_dir()]) == 1


async def test_labels_for_unknown_requests_or_inconsistent_ones_are_set_aside(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    sample_log, label_log = f"file:{tmp_path / 'samples'}", f"file:{tmp_path / 'labels'}"
    events = ml100k.split("test")[440:460].tolist()
    await _serve_two_scenarios(ml100k, registry, tmp_path, sample_log, events)
    settings = _reading_the_labeller(ml100k, triton_teacher, tmp_path, sample_log, label_log)
    await labeller_main(settings, until=lambda: True)
    writer, _, lock = open_writer(LogLocation.parse(label_log), "intruder")
    injected: list[str] = []

    def inject(*_: object) -> None:
        """After the trainer's first read: a ghost's label (a request never served), and two inconsistent ones
        for a real request (a missing candidate; a NaN)."""
        if injected:
            return
        now = time.time()
        ghost = TeacherLabels.of("ghost-request", "tiny-1", ["1", "2"], np.array([0.1, 0.2]), now)
        short = TeacherLabels(example_id="x", teacher_version="tiny-1", candidates=["1", "2"],
                              probabilities=np.array([0.5], dtype="<f4").tobytes(), created_unix=now)
        nan = TeacherLabels.of("y", "tiny-1", ["1"], np.array([np.nan]), now)
        writer.append([encode_labels(r) for r in (ghost, short, nan)])
        injected.append("done")

    report, _ = await stream_main(settings, steps=3, hooks=StreamHooks(on_step=inject), publish=False)
    writer.close()
    if lock is not None:
        lock.close()
    assert isinstance(report, StreamReport)
    assert report.examples_trained == 10  # the first scenario's half; nothing of the injected labels
    assert report.labels_dead_lettered == 3
    reasons = [json.loads(line)["reason"] for line in
               (tmp_path / "worker" / "labels-dead-letter.jsonl").read_text().splitlines()]
    assert any("ghost-request" in r and "does not hold" in r for r in reasons)
    assert any("1 probabilities for 2 candidates" in r for r in reasons)
    assert any("not finite" in r for r in reasons)


def test_reading_from_the_labeller_needs_its_label_log(ml100k: PreparedDataset, tmp_path: Path) -> None:
    from distill_worker.label_log import open_label_store

    with pytest.raises(ConfigError, match="label_log"):
        open_label_store(WorkerSettings(data=ml100k.directory, state_dir=tmp_path, labels_from="labeller"))
    with pytest.raises(ConfigError, match="label_log"):
        asyncio.run(labeller_main(WorkerSettings(data=ml100k.directory, state_dir=tmp_path)))


async def test_the_labeller_sets_aside_a_poison_record_and_a_refused_request_and_its_counts_add_up(
    tiny_teacher: Path, ml100k: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    from recdistill.core.samplelog.file import SampleLog
    from teacher_service.launcher import teacher_process
    from tests.distill_worker.test_stream_faults import _serve_requests

    events = ml100k.split("test")[460:472].tolist()
    # One request with 30 candidates, which this teacher (at most 20) refuses; the others have 10.
    await _serve_requests(registry, tmp_path, ml100k, events, {events[4]: 29})
    SampleLog(tmp_path / "samples" / "test-0").append([b"\x93garbage that is no record"])
    with teacher_process(tiny_teacher, log_path=tmp_path / "triton.log",
                         env={"TEACHER_MAX_CANDIDATES": "20"}) as (endpoints, _):
        settings = WorkerSettings(data=ml100k.directory, state_dir=tmp_path / "worker",
                                  sample_log=f"file:{tmp_path / 'samples'}", label_log=f"file:{tmp_path / 'labels'}",
                                  teacher=TeacherClientSettings(url=endpoints.grpc_url, teacher_version="tiny-1"))
        report = await labeller_main(settings, until=lambda: True)
        # A trainer reading the labeller's log sets the refused request aside with the teacher's reason (the
        # labeller recorded the refusal) instead of waiting for a label that never comes.
        trainer, _ = await stream_main(settings.model_copy(update={"labels_from": "labeller"}),
                                       hooks=StreamHooks(until=lambda: True), publish=False)
    assert (report.records_read, report.labelled, report.dead_lettered) == (13, 11, 2)
    assert isinstance(trainer, StreamReport)
    assert (trainer.records_consumed, trainer.examples_trained, trainer.dead_lettered) == (13, 11, 2)
    trainer_reasons = [json.loads(line)["reason"] for line in
                       (tmp_path / "worker" / "dead-letter.jsonl").read_text().splitlines()]
    assert any("labeller's record" in r and "refused" in r for r in trainer_reasons)
    assert report.adds_up
    assert report.teacher_requests == 11
    reasons = [json.loads(line)["reason"] for line in
               (tmp_path / "worker" / "labeller-dead-letter.jsonl").read_text().splitlines()]
    refused_id = next(k for k, v in client_ids(tmp_path / "samples").items() if v == f"event-{events[4]}")
    assert any(refused_id in r and "refused" in r for r in reasons)
    assert any("unreadable" in r for r in reasons)


def _label_records(label_log: str) -> list[TeacherLabels]:
    from recdistill.core.contracts.labels import decode_labels
    from recdistill.core.samplelog.source import open_scan

    scan = open_scan(LogLocation.parse(label_log))
    entries, _ = scan.read({}, 100_000)
    scan.close()
    return [decode_labels(entry.payload) for entry in entries]


async def test_the_label_log_holds_each_requests_dense_rows_once_and_the_trainers_train_them(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    sample_log, label_log = f"file:{tmp_path / 'samples'}", f"file:{tmp_path / 'labels'}"
    events = ml100k.split("test")[480:500].tolist()
    await _serve_two_scenarios(ml100k, registry, tmp_path, sample_log, events)
    base = _reading_the_labeller(ml100k, triton_teacher, tmp_path, sample_log, label_log).model_copy(
        update={"dense_own": 3, "dense_popular": 2})
    labelled = await labeller_main(base, until=lambda: True)
    records = _label_records(label_log)
    assert len(records) == len(events) == labelled.teacher_requests
    event_of = {k: int(str(v).removeprefix("event-")) for k, v in client_ids(tmp_path / "samples").items()}
    served = {k: [str(c) for c in ml100k.candidates(e, "slate", 9)] for k, e in event_of.items()}
    dense_total = 0
    for record in records:
        event = event_of[record.example_id]
        row = ml100k.events.iloc[event]
        history = [str(i) for i in ml100k.timelines.loc[row["user_id"]].item_ids[: int(row["hist_len"])]]
        asked = record.candidates
        dense = asked[len(served[record.example_id]):]
        assert asked[: len(served[record.example_id])] == served[record.example_id]
        # From the request's history and the popular items, seeded by the request; none a served one again.
        chosen = DenseCandidates(own=3, popular=2).choose(history, ml100k.popular_items, seed=record.example_id)
        assert dense == [item for item in chosen if item not in served[record.example_id]]
        assert 0 < len(dense) <= 5
        assert len(set(asked)) == len(asked)
        dense_total += len(dense)
    assert labelled.teacher_candidates == sum(len(r.candidates) for r in records)
    # The labeller's position lost (killed after appending, before committing): nothing is asked or written again.
    for offset in Path(sample_log.removeprefix("file:")).glob(f"*/consumers/{LABELLER_GROUP}.offset"):
        offset.unlink()
    inferences = _teacher_inferences(triton_teacher)
    rerun = await labeller_main(base.model_copy(update={"worker_id": "labeller-2"}), until=lambda: True)
    assert (rerun.teacher_requests, rerun.already_labelled) == (0, len(events))
    assert len(_label_records(label_log)) == len(records)
    # Both scenarios' trainers train the served candidates and every dense row the labeller wrote, asking nothing.
    reports = [(await stream_main(base.model_copy(update={"scenario": name}), hooks=StreamHooks(until=lambda: True),
                                  publish=False))[0] for name in ("home", "related")]
    assert _teacher_inferences(triton_teacher) == inferences
    assert all(isinstance(r, StreamReport) for r in reports)
    assert sum(r.examples_trained for r in reports) == len(events)  # type: ignore[union-attr]
    assert sum(r.dense_rows_trained for r in reports) == dense_total  # type: ignore[union-attr]
    # The control without dense rows trains none of them, from the same log.
    control, _ = await stream_main(base.model_copy(update={"scenario": "home", "dense_own": 0, "dense_popular": 0,
                                                           "state_dir": tmp_path / "control"}),
                                   hooks=StreamHooks(until=lambda: True), publish=False)
    assert isinstance(control, StreamReport)
    assert (control.examples_trained, control.dense_rows_trained) == (len(events) // 2, 0)


async def test_ids_sent_as_integral_floats_are_labelled_as_the_server_accepted_them(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    """The docs say ids are strings or integers and the parser reads 7.0 as 7: the labeller must too (it used to
    dead-letter such a record: `Expected int | str, got float`)."""
    events = ml100k.split("test")[500:506].tolist()
    settings = make_settings(registry, tmp_path, sampling_rate=1.0)
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.http_url) as client:
        for event in events:
            body = ml100k.to_request(event, "slate", negatives=9)
            for entry in (*body["history"], *body["candidates"]):
                entry["item_id"] = float(entry["item_id"])
            body["user"]["user_id"] = float(body["user"]["user_id"])
            assert (await client.post("/v1/rank", json=body)).status_code == 200
    await _written(tmp_path / "samples", len(events))
    worker = _reading_the_labeller(ml100k, triton_teacher, tmp_path, f"file:{tmp_path / 'samples'}",
                                   f"file:{tmp_path / 'labels'}")
    report = await labeller_main(worker, until=lambda: True)
    assert (report.labelled, report.dead_lettered) == (len(events), 0)
    records = _label_records(f"file:{tmp_path / 'labels'}")
    assert {r.candidates[0] for r in records} == {str(ml100k.events.iloc[e]["item_id"]) for e in events}


def _damage_record(label_log: Path, index: int) -> None:
    """Flip one byte in the payload of the label log's `index`-th record (its checksum then fails)."""
    (segment,) = list(label_log.glob("*/segment-*.log"))
    data = bytearray(segment.read_bytes())
    at = 0
    for _ in range(index):
        at += 16 + int.from_bytes(data[at + 4:at + 8], "little")
    data[at + 16 + 5] ^= 0xFF
    segment.write_bytes(bytes(data))


async def test_a_damaged_label_record_or_a_label_of_another_version_never_stalls_a_trainer(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    """Both used to stall the trainer for good: it waited for labels the labeller had moved past (5 s a request,
    then again). Now each such request is set aside with its reason after one bounded wait a batch, and the
    counts add up."""
    sample_log, label_log = f"file:{tmp_path / 'samples'}", f"file:{tmp_path / 'labels'}"
    events = ml100k.split("test")[520:540].tolist()
    await _serve_two_scenarios(ml100k, registry, tmp_path, sample_log, events)
    base = _reading_the_labeller(ml100k, triton_teacher, tmp_path, sample_log, label_log).model_copy(
        update={"label_wait_s": 2.0, "dense_own": 0, "dense_popular": 0})
    assert (await labeller_main(base, until=lambda: True)).labelled == len(events)
    _damage_record(tmp_path / "labels", 3)

    async def trainer(settings: WorkerSettings) -> StreamReport:
        report, _ = await asyncio.wait_for(stream_main(settings, hooks=StreamHooks(until=lambda: True),
                                                       publish=False), timeout=60)
        assert isinstance(report, StreamReport)
        return report

    damaged = await trainer(base)
    reasons = [json.loads(line)["reason"] for line in (tmp_path / "worker" / "dead-letter.jsonl").read_text()
               .splitlines()]
    # The 4th request went to the first scenario, whose trainer this is (every second request).
    assert (damaged.examples_trained, damaged.dead_lettered) == (len(events) // 2 - 1, 1)
    assert damaged.records_consumed == damaged.examples_trained + damaged.dead_lettered + damaged.other_scenario
    assert len(reasons) == 1
    assert "moved past it" in reasons[0]
    # Pinned to a teacher version the labeller does not label with: every request set aside at once, by reason.
    pinned = await trainer(base.model_copy(update={
        "state_dir": tmp_path / "pinned", "teacher": base.teacher.model_copy(update={"label_version": "old-0"})}))
    assert (pinned.examples_trained, pinned.dead_lettered) == (0, len(events) // 2)
    reasons = [json.loads(line)["reason"] for line in (tmp_path / "pinned" / "dead-letter.jsonl").read_text()
               .splitlines()]
    assert len(reasons) == len(events) // 2
    # (The damaged one has no label of any version: the labeller moved past it.)
    assert sum("teacher version tiny-1, not old-0" in r for r in reasons) == len(events) // 2 - 1, reasons[:2]
    assert sum("moved past it" in r for r in reasons) == 1
