"""The stream's driver: consume, train what is due, export on a cadence, checkpoint, commit.

`StreamPhase` is what `recdistill worker run --mode stream`, the demo and the tests all call: it runs steps
until a condition, checkpoints, exports on a cadence (and once more for the last partial interval), and
reports each publication through a callback. Its rooms: `consumer` (read and join), `trainer` (label and
update), `checkpoint` (what a restart resumes from); publishing is `distill_worker.promote`'s.

Exactly-once: the checkpoint (student weights, optimizer, per-partition offsets, requests still
waiting for feedback, counters) is written atomically after each step; the offsets inside it are the
truth, and the sample log's consumer offsets are committed after it. A crash anywhere resumes from the
last checkpoint: every record is trained on once, none is lost. One worker trains at a time: the others
wait on the log's trainer lease as hot standbys.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import msgspec
import numpy as np
from prometheus_client import Counter

from distill_worker.breaker import CircuitOpenError
from distill_worker.debias import Calibration
from distill_worker.jobs import DeadLetterFile, LeaseLostError, acquire_lease
from distill_worker.label_log import Labels, open_label_store
from distill_worker.promote import publish_and_promote
from distill_worker.settings import WorkerSettings
from distill_worker.stream.checkpoint import load_checkpoint, save_checkpoint
from distill_worker.stream.consumer import SampleConsumer, ScenarioFilter, StepResult
from distill_worker.stream.trainer import StreamTrainer
from distill_worker.student import StudentConfig, StudentModel, load_student
from distill_worker.teacher_client import TeacherClient, TeacherUnavailableError
from recdistill.core.contracts.records import encode_record
from recdistill.core.contracts.worker import (
    DataWindow,
    Freshness,
    PublishResult,
    StandbyReport,
    StreamReport,
    StreamState,
)
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.errors import BrokerUnavailableError
from recdistill.core.features.encoder import Encoder
from recdistill.core.samplelog import LogLocation, LogSource, TrainerLease, open_lease, open_source
from recdistill.core.samplelog.entry import DEFAULT_GROUP
from recdistill.core.training import EncodedSplit

logger = logging.getLogger(__name__)
CONSUMER = DEFAULT_GROUP  # the first scenario trainer's consumer name on a file log
PROMOTIONS = Counter("recdistill_worker_promotions", "Exported students by gate outcome", ["outcome"])
DEAD_LETTERED = Counter("recdistill_worker_dead_lettered", "Sampled requests the teacher refused (not trained)")


# Exports, gates, publishes and promotes a model trained on the window it is given.
Publisher = Callable[[StudentModel, DataWindow], PublishResult]


class StreamPhase:
    """The stream-phase driver: consume, train what is due, export on a cadence, checkpoint, commit.

    Built from a ready `trainer` (the model, its teacher and label store, the settings); it reads `samples`
    (a log location or a source) and keeps its checkpoint and dead letters in `state_dir`. `publisher`
    exports, gates, publishes and promotes a model (None: nothing is published); `on_publish(version_or_None)`
    is told each outcome; `lease`: it trains only while it holds it; `scenario`: the records it takes.
    """

    def __init__(self, trainer: StreamTrainer, samples: Path | str | LogSource, state_dir: Path,
                 publisher: Publisher | None = None, on_publish: Callable[[str | None], None] | None = None,
                 lease: TrainerLease | None = None, scenario: ScenarioFilter | None = None) -> None:
        self.state_path = state_dir / "stream.pt"
        self.dead_letters = DeadLetterFile(state_dir / "dead-letter.jsonl")
        state_dir.mkdir(parents=True, exist_ok=True)
        self.config = config = trainer.config
        store = trainer.store
        self.publisher = publisher
        self.on_publish = on_publish
        self.lease = lease  # this worker trains only while it holds the lease
        # Freshness: for each request trained, the time from serving it to the first live version trained on it
        # (in memory: the requests trained by this process).
        self._unpublished_ts: list[float] = []
        self.freshness_s: list[float] = []
        self.state = StreamState()
        self.trainer = trainer
        if self.state_path.exists():
            self._restore()
        source = open_source(LogLocation.parse(samples), "worker") if isinstance(samples, Path | str) else samples
        self.consumer = SampleConsumer(source, self.state, config, self._dead_letter,
                                       trainer.schema.request_types(ignore_unknown=True).rank_request, scenario,
                                       store.saw if store is not None else None)
        if store is not None:
            store.follow(self.state.offsets)  # what this trainer has read: a label it lacks was read before it
        for request_id in self.state.waiting if store is not None else ():  # restored: their labels are wanted
            store.saw(request_id)

    @property
    def model(self) -> StudentModel:
        return self.trainer.model

    # ---- checkpoint ---------------------------------------------------------------------------
    def _restore(self) -> None:
        self.state = load_checkpoint(self.state_path, self.model, self.trainer.optimizer)
        logger.info("resumed the stream at offsets %s (%d records consumed)", self.state.offsets,
                    self.state.records_consumed)

    def checkpoint(self) -> None:
        save_checkpoint(self.state_path, self.model, self.trainer.optimizer, self.state)

    # ---- steps --------------------------------------------------------------------------------
    async def _publish(self) -> str | None:
        assert self.publisher is not None
        published = await asyncio.to_thread(self.publisher, self.model, self.state.unpublished)
        version = published.version
        self.state.since_export = 0
        PROMOTIONS.labels(outcome="promoted" if version else "refused").inc()
        if version:
            self.state.versions_promoted.append(version)
            now = time.time()
            self.freshness_s += [now - ts for ts in self._unpublished_ts]
            self._unpublished_ts = []
            self.state.unpublished = DataWindow(sampled_requests=0)
        else:
            self.state.exports_refused += 1
        if self.on_publish is not None:
            self.on_publish(version)
        return version

    async def train_due(self, now: float) -> int:
        """Train every request whose join window has closed, in chunks; returns how many were trained
        (records the teacher refused go to the dead-letter file instead)."""
        due = self.consumer.due(now)
        trained = 0
        for start in range(0, len(due), self.config.batch_size):
            chunk = due[start:start + self.config.batch_size]
            dense_before = self.trainer.dense_rows
            refused = await self.trainer.train(chunk, self.state.feedback)
            self.state.dense_rows_trained += self.trainer.dense_rows - dense_before
            for index, reason in refused.items():
                self._dead_letter(encode_record(chunk[index]), chunk[index].request_id, reason)
            served = [r.ts for i, r in enumerate(chunk) if i not in refused]
            self._unpublished_ts += served
            self.state.unpublished = self.state.unpublished.extended(served)
            if self.config.audit_trained_ids:
                self.state.trained_ids += [r.request_id for i, r in enumerate(chunk) if i not in refused]
            self.consumer.release(chunk)
            # Counted chunk by chunk: if a later chunk fails (teacher outage), the counts still add up.
            self.state.examples_trained += len(chunk) - len(refused)
            self.state.since_export += len(chunk) - len(refused)
            trained += len(chunk) - len(refused)
        return trained

    def _dead_letter(self, payload: bytes, request_id: str, reason: str) -> None:
        """Set aside a record that cannot be trained (unreadable, or refused by the teacher), with the reason,
        for a person to look at; never retried. After a crash a line may repeat (the file is written before
        the checkpoint); the counter in the checkpoint counts each record once."""
        self.dead_letters.write(payload, reason, request_id)
        self.state.dead_lettered += 1
        DEAD_LETTERED.inc()

    async def step(self, now: float | None = None) -> StepResult:
        """Consume, train what is due, maybe publish, checkpoint, commit. Safe to kill at any point."""
        now = time.time() if now is None else now
        await self._hold_lease()
        before = self.state.progress()
        read = self.consumer.consume()
        if self.trainer.store is not None:  # labels of requests the log does not hold: set aside
            await asyncio.to_thread(self.trainer.store.sweep, self.consumer.read_from_unix,
                                    self.consumer.caught_up_unix, 2 * self.config.join_window_s)
        trained = await self.train_due(now)
        self.consumer.prune_feedback(now)
        result = StepResult(read, trained)
        if self.publisher is not None and self.state.since_export >= self.config.export_every:
            result.published = await self._publish()
            result.refused = result.published is None
        await self._hold_lease()
        if self.state.progress() != before:  # an idle step rewrites nothing
            self.checkpoint()
        self.consumer.commit()
        return result

    async def _hold_lease(self) -> None:
        """Renew the lease (at the start of a step, so also through a teacher outage, and again before the
        checkpoint); a worker that lost it stops before it writes anything."""
        if self.lease is not None and not await asyncio.to_thread(self.lease.renew):
            raise LeaseLostError(f"worker {self.lease.owner} lost the trainer lease to {self.lease.holder()}: "
                                 "it stops without writing its checkpoint")

    async def run(self, until: Callable[[], bool] = lambda: False, steps: int | None = None,
                  clock: Callable[[], float] = time.time,
                  on_step: Callable[[StepResult, StreamState], None] | None = None) -> StreamState:
        """Steps until `until()`, checked before a step, was true and that step found nothing more to read
        or train (so whatever was written before `until()` turned true is trained), or after `steps`.
        The last partial export interval is exported before returning."""
        done, outage = 0, 0
        teacher = self.trainer.teacher
        if teacher is not None:
            teacher.watch()  # teacher_up, and a wake-up when a teacher found down answers again
        while steps is None or done < steps:
            stop_requested = until()
            try:
                result = await self.step(clock())
            except (TeacherUnavailableError, CircuitOpenError, BrokerUnavailableError) as exc:
                # An outage is not a reason to stop: what was trained stays trained, what was not stays
                # waiting (in memory and in the log from the last checkpoint); try again after a pause.
                outage += 1
                pause = min(self.config.outage_backoff_max_s, self.config.idle_s * 2 ** min(outage, 8))
                if self.lease is not None:
                    pause = min(pause, self.lease.ttl_ms / 3_000)  # keep renewing the lease meanwhile
                logger.warning("%s; the stream waits up to %.1fs and tries again", exc, pause)
                if teacher is not None and not isinstance(exc, BrokerUnavailableError):
                    await teacher.wait_for_return(pause)  # at once when the teacher answers again
                else:
                    await asyncio.sleep(pause)
                continue
            outage = 0
            done += 1
            if on_step is not None:
                on_step(result, self.state)
            if stop_requested and not result.read and not self.state.waiting:
                break
            if not result.read and not result.trained:
                await asyncio.sleep(self.config.idle_s)
        if self.publisher is not None and self.state.since_export:
            await self._publish()
            self.checkpoint()
        return self.state


@dataclass(frozen=True)
class StreamHooks:
    """How a caller that embeds the stream (the demo, a test) watches and ends it; the job itself needs none.
    `until`: stop once true and nothing more is to be read or trained; `clock`: event time (the demo's
    replay closes every join window with infinity); `on_step` and `on_publish`: told each step and each
    publication's outcome."""

    until: Callable[[], bool] = lambda: False
    clock: Callable[[], float] = time.time
    on_step: Callable[[StepResult, StreamState], None] | None = None
    on_publish: Callable[[str | None], None] | None = None


async def stream_main(settings: WorkerSettings, steps: int | None = None, hooks: StreamHooks = StreamHooks(),
                      initial_model: StudentModel | None = None, calibration: Calibration | None = None,
                      holdout: EncodedSplit | None = None, publish: bool = True
                      ) -> tuple[StreamReport | StandbyReport, StudentModel]:
    """The `worker run --mode stream` job: continue from the batch student (or the last checkpoint) (or from
    `initial_model`, with its `calibration`) and publish through the gate (on `holdout`, default: the gate's
    own; nothing when not `publish`); the demo and the tests call it the same way. Returns (report, model)."""
    dataset = PreparedDataset(settings.data)
    target = settings.target(dataset.schema)  # the scenario: its view, state, consumer group and registry
    state_dir, group = settings.target_state(dataset.schema), settings.group(dataset.schema)
    if holdout is None and publish:
        holdout = EncodedSplit.build(dataset, Encoder(dataset.schema, target.view), "valid", settings.task, None,
                                     settings.gate.holdout_events)  # the gate's own holdout, as in the batch phase
    if initial_model is None:
        initial_model, calibration = load_student(state_dir, dataset.schema)
    if initial_model is None:
        initial_model = StudentModel(dataset.schema, StudentConfig(), view=target.view)
    distill = asdict(settings.distill)

    def publisher(model: StudentModel, window: DataWindow) -> PublishResult:
        assert holdout is not None
        return publish_and_promote(settings, model, holdout, window, distill)

    location = LogLocation.parse(settings.sample_log)
    # One trainer at a time: this one may be a hot standby until the lease is free.
    lease = open_lease(location, settings.worker_id, settings.lease_ttl_s, group)
    if not await acquire_lease(lease, hooks.until):
        return StandbyReport(holder=lease.holder()), initial_model
    teacher, store = None, None
    if settings.distill.use_teacher:
        teacher = TeacherClient(settings.teacher, Encoder(dataset.schema, "teacher", settings.teacher.history_events))
        store = open_label_store(settings)
    try:
        # Built once the lease is held: a standby that takes over resumes from the latest checkpoint.
        trainer = StreamTrainer(dataset, initial_model, settings.distill, settings.stream, teacher, store,
                                calibration.transform if calibration else None, settings.dense)
        phase = StreamPhase(trainer, open_source(location, settings.worker_id, group), state_dir,
                            publisher=publisher if publish else None, on_publish=hooks.on_publish, lease=lease,
                            scenario=ScenarioFilter.of(target, settings.place(dataset.schema)))
        state = await phase.run(until=hooks.until, steps=steps, clock=hooks.clock, on_step=hooks.on_step)
    finally:
        if teacher is not None:
            await teacher.close()
        if store is not None:
            store.close()
        lease.release()
    report = _report(state, store, phase.freshness_s)
    if settings.distill.use_teacher:
        report = msgspec.structs.replace(report, label_version=settings.teacher.trained_version)
    return report, phase.model


def _report(state: StreamState, store: Labels | None, freshness_s: list[float]) -> StreamReport:
    freshness = None
    if freshness_s:
        values = np.array(freshness_s)
        freshness = Freshness(p50=round(float(np.percentile(values, 50)), 2),
                              p95=round(float(np.percentile(values, 95)), 2), requests=int(values.size))
    counters = msgspec.structs.asdict(state.counters())
    return StreamReport(**counters, label_hit_rate=store.hit_rate if store is not None else None,
                        freshness_s=freshness, labels_dead_lettered=getattr(store, "dead_lettered", None))
