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
from recdistill.core.errors import ConfigError
from recdistill.core.samplelog import LogLocation, open_writer
from tests.conftest import RunningTriton
from tests.distill_worker.test_stream_phase import _written
from tests.student_server.conftest import make_settings, run_server

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
    assert any(f"event-{events[4]}" in r and "refused" in r for r in reasons)
    assert any("unreadable" in r for r in reasons)
