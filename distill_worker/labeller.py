"""The labeller (`recdistill worker label`): every sampled request labelled by the teacher once, as it arrives,
for all the candidates it was served with and its dense candidates (`dense_own` of the user's earlier items
from the request's history, `dense_popular` popular ones: teacher labels only, in the same call and the same
record), into the label log, whatever scenario served it. The scenarios'
trainers (`labels_from = "labeller"`) read their labels from that log and never call the teacher, so the
teacher's cost a sampled request does not grow with the number of scenarios.

It reads the sample log in a consumer group of its own (`distill-labeller`: a position and, with Redis, pending
entries of its own), one labeller at a time (its own lease; others wait as hot standbys). Labels are appended
before the position is committed: a labeller killed in between reads those requests again, finds their labels
in the log and does not call the teacher for them again. An unreadable record, and a request the teacher
refuses, is set aside with its reason (`state_dir/labeller-dead-letter.jsonl`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from distill_worker.breaker import CircuitOpenError
from distill_worker.jobs import LeaseLostError, acquire_lease, dead_letter_file
from distill_worker.label_log import LABELLER_GROUP, SharedLabelStore
from distill_worker.labels import LabelRequest, label_each
from distill_worker.settings import WorkerSettings
from distill_worker.teacher_client import TeacherClient, TeacherUnavailableError
from recdistill.core.contracts.labels import LabellerReport
from recdistill.core.contracts.records import InvalidRecordError, SampledRequest, decode_record
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.dense import DenseCandidates
from recdistill.core.errors import BrokerUnavailableError, ConfigError
from recdistill.core.features.encoder import Encoder
from recdistill.core.samplelog import LogLocation, LogSource, open_lease, open_source
from recdistill.core.samplelog.entry import Position

logger = logging.getLogger(__name__)

__all__ = ["LABELLER_GROUP", "Labeller", "labeller_main"]
READ_CHUNK = 512  # sampled requests labelled per step (one label-log append)


class Labeller:
    def __init__(self, dataset: PreparedDataset, source: LogSource, store: SharedLabelStore, teacher: TeacherClient,
                 dead_letter: Callable[[bytes, str], None], dense: DenseCandidates | None = None) -> None:
        self.source, self.store, self.teacher, self.dead_letter = source, store, teacher, dead_letter
        self.dense, self.popular = dense, dataset.popular_items if dense is not None else []
        self.request_type = dataset.schema.request_types(ignore_unknown=True).rank_request
        self.encoder = Encoder(dataset.schema, "teacher", teacher.settings.history_events)
        self.positions: dict[str, Position] = dict(source.committed())
        self.report = LabellerReport(teacher_version=teacher.settings.trained_version,
                                     label_log=str(store.location))

    async def step(self) -> int:
        """Label what the sample log gained (up to a chunk), then commit the position; returns records read."""
        entries, _ = await asyncio.to_thread(self.source.read, self.positions, READ_CHUNK)
        requests: list[LabelRequest] = []
        payloads: list[bytes] = []
        report = self.report
        for entry in entries:
            try:
                record = decode_record(entry.payload, self.request_type)
            except InvalidRecordError as exc:
                report.dead_lettered += 1
                self.dead_letter(entry.payload, f"an unreadable sample-log record: {exc}")
                continue
            if isinstance(record, SampledRequest):
                requests.append(LabelRequest.of(record, self.encoder, self.dense, self.popular))
                payloads.append(entry.payload)
            else:
                report.feedback += 1
        calls = self.store.teacher_calls
        _, refused = await label_each(self.store, requests, self.teacher)
        for index, reason in refused.items():  # recorded in the label log too: the trainers set it aside
            report.dead_lettered += 1
            self.dead_letter(payloads[index], f"request {requests[index].example_id}: {reason}")
            await asyncio.to_thread(self.store.refuse, requests[index].example_id,
                                    self.teacher.settings.trained_version, reason)
        labelled = self.store.teacher_calls - calls  # labels the teacher gave now and the log took
        report.labelled += labelled
        report.already_labelled += len(requests) - labelled - len(refused)
        report.teacher_requests = self.store.teacher_calls
        report.teacher_candidates = self.store.teacher_candidates
        report.records_read += len(entries)
        for entry in entries:
            self.positions[entry.partition] = entry.position
        await asyncio.to_thread(self.source.commit, self.positions, [])  # after the labels are in the log
        return len(entries)

    async def run(self, until: Callable[[], bool], steps: int | None, idle_s: float, backoff_max_s: float,
                  lease_renew: Callable[[], bool]) -> LabellerReport:
        """Steps until `until()` was true and a step read nothing, or after `steps`; through a teacher or broker
        outage it waits and tries again (nothing is committed that was not labelled)."""
        done, outage = 0, 0
        while steps is None or done < steps:
            stop_requested = until()
            if not await asyncio.to_thread(lease_renew):
                raise LeaseLostError("the labeller lost its lease to another labeller: it stops")
            try:
                read = await self.step()
            except (TeacherUnavailableError, CircuitOpenError, BrokerUnavailableError) as exc:
                outage += 1
                pause = min(backoff_max_s, idle_s * 2 ** min(outage, 8))
                logger.warning("%s; the labeller waits %.1fs and tries again", exc, pause)
                await asyncio.sleep(pause)
                continue
            outage, done = 0, done + 1
            if stop_requested and not read:
                break
            if not read:
                await asyncio.sleep(idle_s)
        return self.report


async def labeller_main(settings: WorkerSettings, steps: int | None = None,
                        until: Callable[[], bool] = lambda: False) -> LabellerReport:
    """The `worker label` job: the sample log (`sample_log`) labelled into the label log (`label_log`)."""
    if settings.label_log is None:
        raise ConfigError("the labeller writes the label log: set label_log (--label-log file:DIR or "
                          "redis://HOST:PORT/N?stream=NAME), the one the trainers read")
    dataset = PreparedDataset(settings.data)
    location = LogLocation.parse(settings.sample_log)
    lease = open_lease(location, settings.worker_id, settings.lease_ttl_s, LABELLER_GROUP)
    if not await acquire_lease(lease, until):
        return LabellerReport(teacher_version=settings.teacher.trained_version, label_log=settings.label_log)
    teacher = TeacherClient(settings.teacher, Encoder(dataset.schema, "teacher", settings.teacher.history_events))
    store = SharedLabelStore(LogLocation.parse(settings.label_log), settings.worker_id,
                             dead_letter_file(settings.state_dir / "labels-dead-letter.jsonl"))
    source = open_source(location, settings.worker_id, LABELLER_GROUP)
    started = time.perf_counter()
    try:
        labeller = Labeller(dataset, source, store, teacher,
                            dead_letter_file(settings.state_dir / "labeller-dead-letter.jsonl"), settings.dense)
        report = await labeller.run(until, steps, settings.stream.idle_s, settings.stream.outage_backoff_max_s,
                                    lease.renew)
    finally:
        await teacher.close()
        store.close()
        source.close()
        lease.release()
    logger.info("labelled %d sampled requests (%d already labelled) in %.1fs", report.labelled,
                report.already_labelled, time.perf_counter() - started)
    return report
