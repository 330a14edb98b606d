"""Streaming phase: consume sampled traffic from the sample log, join delayed feedback, label with the
teacher, update the student incrementally, checkpoint, and periodically export, gate and promote.

Exactly-once: the checkpoint (student weights, optimizer, per-partition offsets, requests still
waiting for feedback, counters) is written atomically after each step; the offsets inside it are the
truth, and the sample log's consumer offsets are committed after it. A crash anywhere resumes from the
last checkpoint: every record is trained on once, none is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prometheus_client import Counter, Gauge

from distill_worker.debias import inverse_propensity_weights
from distill_worker.labels import LabelRequest, LabelStore
from distill_worker.promote import GateConfig
from distill_worker.settings import TeacherClientSettings, WorkerSettings
from distill_worker.student import StudentConfig, StudentModel
from distill_worker.teacher_client import TeacherClient
from distill_worker.trainer import DistillConfig, distill_loss
from recdistill.data.dataset import PreparedDataset
from recdistill.features.encoder import Encoder
from recdistill.features.request import parse_rank_request
from recdistill.samplelog import SampleLog
from recdistill.training import Batch, to_torch

logger = logging.getLogger(__name__)
CONSUMER = "distill-worker"
RECORDS = Counter("recdistill_worker_records_consumed", "Sample-log records consumed", ["kind"])
TRAIN_LOSS = Gauge("recdistill_worker_train_loss", "Loss of the last incremental update")
TEACHER_LAG = Gauge("recdistill_worker_teacher_lag_seconds",
                    "Time between the end of the teacher's training window and the newest request labelled")
PROMOTIONS = Counter("recdistill_worker_promotions", "Exported students by gate outcome", ["outcome"])


@dataclass
class StreamConfig:
    join_window_s: float = 60.0  # feedback arriving later than this after the request is "late"
    exposed_positions: int = 10  # candidates ranked above this were shown: unlabelled ones count as 0
    max_records: int = 5_000  # per partition and step
    lr: float = 1e-3
    export_every: int = 1_000  # trained examples between export attempts
    inverse_propensity: bool = True  # weight examples by 1 / sampling probability


@dataclass
class StreamState:
    offsets: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, dict[str, Any]] = field(default_factory=dict)  # request_id -> sampled request record
    feedback: dict[str, dict[str, float]] = field(default_factory=dict)  # request_id -> item_id -> label
    feedback_seen: dict[str, float] = field(default_factory=dict)  # request_id -> when its feedback came
    records_consumed: int = 0
    examples_trained: int = 0
    feedback_joined: int = 0
    unmatched_feedback: int = 0  # feedback with no waiting request: not sampled, or came after training
    since_export: int = 0
    versions_promoted: list[str] = field(default_factory=list)


class StreamWorker:
    def __init__(self, dataset: PreparedDataset, sample_log_root: Path, state_dir: Path, teacher: TeacherClient,
                 store: LabelStore, distill: DistillConfig, config: StreamConfig,
                 initial_model: StudentModel | None = None,
                 publisher: Callable[[StudentModel], str | None] | None = None,
                 soft_transform: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.dataset = dataset
        self.root = sample_log_root
        self.state_path = state_dir / "stream.pt"
        state_dir.mkdir(parents=True, exist_ok=True)
        self.teacher, self.store, self.distill, self.config = teacher, store, distill, config
        self.publisher = publisher  # export + gate + publish + promote; returns the version or None
        self.soft_transform = soft_transform  # the batch phase's teacher calibration, if any
        self.student_encoder = Encoder(dataset.schema, "student")
        self.teacher_encoder = Encoder(dataset.schema, "teacher")
        self.model = initial_model or StudentModel(dataset.schema, StudentConfig())
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.state = StreamState()
        if self.state_path.exists():
            self._restore()

    # ---- checkpoint ---------------------------------------------------------------------------
    def _restore(self) -> None:
        saved = torch.load(self.state_path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.state = StreamState(**saved["state"])
        logger.info("resumed the stream at offsets %s (%d records consumed)", self.state.offsets,
                    self.state.records_consumed)

    def checkpoint(self) -> None:
        data = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "state": asdict(self.state), "saved_unix": time.time()}
        with tempfile.NamedTemporaryFile(dir=self.state_path.parent, delete=False, suffix=".tmp") as handle:
            torch.save(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, self.state_path)

    def commit_offsets(self) -> None:
        for partition, offset in self.state.offsets.items():
            SampleLog(self.root / partition).commit(CONSUMER, offset)

    # ---- one step -----------------------------------------------------------------------------
    def _partitions(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.exists() else []

    def consume(self) -> int:
        """Read new records of every partition into the state; returns how many were read."""
        read = 0
        for partition in self._partitions():
            log = SampleLog(self.root / partition)
            start = self.state.offsets.get(partition, 0)
            records = log.read(start, self.config.max_records)
            for offset, record in records:
                self._take(record)
                self.state.offsets[partition] = offset + 1
            read += len(records)
        self.state.records_consumed += read
        return read

    def _take(self, record: dict[str, Any]) -> None:
        RECORDS.labels(kind=record["kind"]).inc()
        if record["kind"] == "request":
            self.state.waiting[record["request_id"]] = record
        elif record["kind"] == "feedback":
            # Feedback may come before its request record (the sampler writes asynchronously): keep it.
            request_id = record["request_id"]
            self.state.feedback.setdefault(request_id, {})[record["item_id"]] = record["label"]
            self.state.feedback_seen.setdefault(request_id, record["received_ts"])

    def _prune_feedback(self, now: float) -> None:
        """Feedback that matched no waiting request for two windows arrived after its request was trained."""
        horizon = 2 * self.config.join_window_s
        for request_id, seen in list(self.state.feedback_seen.items()):
            if request_id not in self.state.waiting and now - seen >= horizon:
                self.state.unmatched_feedback += len(self.state.feedback.pop(request_id, {}))
                del self.state.feedback_seen[request_id]

    def ready(self, now: float) -> list[dict[str, Any]]:
        """Requests whose feedback window has closed, oldest first."""
        due = [r for r in self.state.waiting.values() if now - r["ts"] >= self.config.join_window_s]
        return sorted(due, key=lambda r: r["ts"])

    def _examples(self, records: list[dict[str, Any]]) -> tuple[Batch, list[LabelRequest]]:
        contexts, teacher_contexts, requests = [], [], []
        for record in records:
            request = parse_rank_request(record["request"])
            contexts.append(self.student_encoder.map_request(request, now=record["request_ts"]))
            teacher_context = self.teacher_encoder.map_request(request, now=record["request_ts"])
            teacher_contexts.append(teacher_context)
            requests.append(LabelRequest(record["request_id"], [str(c.item_id) for c in request.candidates],
                                         teacher_context))
        tensors, mask = self.student_encoder.assemble(contexts)
        width = mask.shape[1]
        labels = np.zeros((len(records), width), dtype=np.float32)
        observed = np.zeros_like(labels)
        positions = np.zeros((len(records), width), dtype=np.int64)
        for row, (record, label_request) in enumerate(zip(records, requests, strict=True)):
            logged = np.asarray(record["positions"])
            positions[row, : len(logged)] = logged + 1
            observed[row, : len(logged)] = logged < self.config.exposed_positions
            given = self.state.feedback.get(record["request_id"], {})
            for column, item in enumerate(label_request.candidates):
                if item in given:
                    labels[row, column] = given[item]
                    observed[row, column] = 1.0  # feedback is an observation, whatever the position
        if self.config.inverse_propensity:
            weights = inverse_propensity_weights(np.array([r["sampling_probability"] for r in records]))
        else:
            weights = np.ones(len(records), dtype=np.float32)
        extras = {"observed": observed, "position": positions, "weight": weights}
        batch = Batch(to_torch(tensors), torch.from_numpy(labels), torch.from_numpy(mask),
                      np.arange(len(records)), {k: torch.from_numpy(v) for k, v in extras.items()})
        return batch, requests

    async def train_ready(self, now: float, batch_size: int = 256) -> int:
        records = self.ready(now)
        for start in range(0, len(records), batch_size):
            chunk = records[start:start + batch_size]
            batch, label_requests = self._examples(chunk)
            if self.distill.use_teacher:
                soft = await self.store.label(label_requests, self.teacher)
                if self.teacher.settings.teacher_data_end_ts is not None:
                    TEACHER_LAG.set(chunk[-1]["request_ts"] - self.teacher.settings.teacher_data_end_ts)
                if self.soft_transform is not None:  # one call for the whole batch
                    lengths = np.cumsum([len(values) for values in soft])[:-1]
                    soft = np.split(self.soft_transform(np.concatenate(soft)), lengths)
                padded = np.zeros(batch.labels.shape, dtype=np.float32)
                for row, values in enumerate(soft):
                    padded[row, : len(values)] = values
                batch.extras["soft_label"] = torch.from_numpy(padded)
            self.model.train()
            loss = distill_loss(self.model, batch, self.distill, full_traffic=True)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.model.eval()
            TRAIN_LOSS.set(loss.item())
            for record in chunk:
                request_id = record["request_id"]
                self.state.waiting.pop(request_id)
                self.state.feedback_joined += len(self.state.feedback.pop(request_id, {}))
                self.state.feedback_seen.pop(request_id, None)
            self.state.examples_trained += len(chunk)
            self.state.since_export += len(chunk)
        return len(records)

    async def step(self, now: float | None = None) -> dict[str, Any]:
        """Consume, train what is due, maybe publish, checkpoint, commit. Safe to kill at any point."""
        now = time.time() if now is None else now
        read = self.consume()
        trained = await self.train_ready(now)
        self._prune_feedback(now)
        version = None
        if self.publisher is not None and self.state.since_export >= self.config.export_every:
            version = await asyncio.to_thread(self.publisher, self.model)
            self.state.since_export = 0
            PROMOTIONS.labels(outcome="promoted" if version else "refused").inc()
            if version:
                self.state.versions_promoted.append(version)
        self.checkpoint()
        self.commit_offsets()
        return {"read": read, "trained": trained, "published": version}


async def run_stream(worker: StreamWorker, steps: int | None, idle_s: float = 1.0) -> None:
    done = 0
    while steps is None or done < steps:
        result = await worker.step()
        done += 1
        if not result["read"] and not result["trained"]:
            await asyncio.sleep(idle_s)


async def stream_main(settings: WorkerSettings, teacher_settings: TeacherClientSettings, distill: DistillConfig,
                      samples: Path, steps: int | None, config: StreamConfig,
                      gate_config: GateConfig | None = None) -> dict[str, Any]:
    """The `worker run --mode stream` job: continue from the batch student (or the last checkpoint)."""
    from distill_worker.batch import load_student, publish_and_promote
    from recdistill.training import EncodedSplit

    dataset = PreparedDataset(settings.data)
    holdout = EncodedSplit.build(dataset, Encoder(dataset.schema, "student"), "valid", "slate", None,
                                 settings.max_holdout_events)
    teacher = TeacherClient(teacher_settings, Encoder(dataset.schema, "teacher"))
    store = LabelStore(settings.state_dir / "labels.sqlite")
    model, calibration = load_student(settings.state_dir, dataset)
    worker = StreamWorker(
        dataset, samples, settings.state_dir, teacher, store, distill, config, initial_model=model,
        soft_transform=calibration.transform if calibration else None,
        publisher=lambda model: publish_and_promote(settings, model, holdout,
                                                    {"teacher_version": teacher_settings.teacher_version},
                                                    gate_config or GateConfig()),
    )
    try:
        await run_stream(worker, steps)
    finally:
        await teacher.close()
        store.close()
    return asdict(worker.state) | {"label_hit_rate": store.hit_rate}
