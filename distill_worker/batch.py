"""Batch phase: label the historical training window with the teacher (through Triton), debias the
labels, train the student, export it, gate it and promote it."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from rich.progress import Progress

from distill_worker.debias import Calibration, CalibrationMethod, fit_calibration, to_sampled_space
from distill_worker.label_log import Labels, open_label_store
from distill_worker.labels import LabelRequest
from distill_worker.promote import publish_and_promote
from distill_worker.settings import DistillConfig, WorkerSettings
from distill_worker.student import StudentConfig, StudentModel, save_student
from distill_worker.teacher_client import TeacherClient
from distill_worker.trainer import distill_loss
from recdistill.core import distributed
from recdistill.core.contracts.worker import BatchReport, DataWindow, DebiasReport, PublishResult
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.dense import DenseCandidates
from recdistill.core.features.encoder import Encoder
from recdistill.core.logs import STDERR
from recdistill.core.training import EncodedSplit, FitResult, evaluate_split, fit

logger = logging.getLogger(__name__)
LABEL_CHUNK = 4_096


async def teacher_labels(dataset: PreparedDataset, split: EncodedSplit, negatives: int | None,
                         client: TeacherClient, store: Labels, what: str, dense: DenseCandidates | None = None
                         ) -> np.ndarray:
    """Soft labels [N, C] of the teacher for each event's candidates (store first, then the teacher)."""
    encoder = Encoder(dataset.schema, "teacher")
    out = np.zeros(split.labels.shape, dtype=np.float32)
    with Progress(transient=True, console=STDERR) as progress:
        bar = progress.add_task(f"teacher labels ({what})", total=len(split))
        for start in range(0, len(split), LABEL_CHUNK):
            chunk = split.event_ids[start:start + LABEL_CHUNK]
            contexts = dataset.contexts(encoder, chunk, split.task, negatives, dense)
            requests = [LabelRequest(f"{dataset.manifest.dataset}:{split.task}:{e}",
                                     dataset.candidates(int(e), split.task, negatives, dense), c, "window")
                        for e, c in zip(chunk, contexts, strict=True)]
            for row, soft in enumerate(await store.label(requests, client), start=start):
                out[row, : len(soft)] = soft  # fewer dense candidates than the most: the rest is padding
            progress.update(bar, advance=len(chunk))
    return out


def negative_keep_rate(settings: WorkerSettings, dataset: PreparedDataset) -> float | None:
    """Share of a slate's logged negatives the student trains on with hard labels (None: no sampling)."""
    if settings.task != "slate" or not settings.sampling_correction:
        return None
    return settings.observed_negatives / dataset.manifest.slate_negatives


@dataclass
class BatchData:
    """What the batch phase trains and validates on; built once, shared by every run over it."""

    dataset: PreparedDataset
    train: EncodedSplit  # with an `observed` extra: 0 on candidates that only get a teacher label
    valid: EncodedSplit  # early stopping and calibration: the valid window before the gate's holdout
    gate: EncodedSplit  # the gate's holdout: the valid window's most recent events, used by nothing else
    train_negatives: int  # not-yet-interacted items per training event (slate: observed + teacher-only)
    dense: DenseCandidates | None = None  # the training window's dense candidates (after the negatives)

    @classmethod
    def build(cls, settings: WorkerSettings) -> BatchData:
        dataset = PreparedDataset(settings.data)
        encoder = Encoder(dataset.schema, settings.target(dataset.schema).view)
        task = settings.task
        observed_negatives = settings.observed_negatives if task == "slate" else 0
        negatives = observed_negatives + settings.teacher_negatives
        train = EncodedSplit.build(dataset, encoder, "train", task, negatives, settings.max_train_events,
                                   per_user=settings.window_events, dense=settings.dense)
        observed = np.zeros(train.labels.shape, dtype=np.float32)
        observed[:, : 1 + observed_negatives] = 1.0  # the negatives after them and the dense rows: teacher only
        train.extras["observed"] = observed
        # Holdouts as the teacher is evaluated: every logged negative (slate), impressions only (ctr).
        gate_events = settings.gate.holdout_events
        valid = EncodedSplit.build(dataset, encoder, "valid", task, None, settings.max_holdout_events,
                                   exclude_last=gate_events)
        gate = EncodedSplit.build(dataset, encoder, "valid", task, None, gate_events)
        return cls(dataset, train, valid, gate, negatives, settings.dense)

    def holdout(self, split: str, settings: WorkerSettings) -> EncodedSplit:
        return EncodedSplit.build(self.dataset, self.valid.encoder, split, self.valid.task, None,
                                  settings.max_holdout_events)


class BatchPhase:
    """The batch phase's steps, on one `BatchData`: label with the teacher, debias, train, evaluate,
    publish. `run_batch` (the `recdistill worker run --mode batch` job) runs them once; an experiment
    (the demo's paired seeds, ablations and controls) runs `train` many times over the same labels."""

    def __init__(self, settings: WorkerSettings, data: BatchData | None = None) -> None:
        self.settings = settings
        self.data = data or BatchData.build(settings)
        self.raw_soft: np.ndarray | None = None  # teacher probabilities on the training slates
        self.raw_fresh: np.ndarray | None = None  # ... on the (fresher) valid window, for calibration
        self.label_hit_rate = float("nan")
        self._debiased: dict[str, tuple[np.ndarray, Calibration, DebiasReport]] = {}

    async def label(self, extra: dict[str, EncodedSplit] | None = None) -> dict[str, np.ndarray]:
        """Ask the teacher (a black box behind Triton) for soft labels on the training and valid windows,
        and for its scores on each `extra` split (returned by name); the label store makes a rerun free."""
        teacher = self.settings.teacher
        client = TeacherClient(teacher, Encoder(self.data.dataset.schema, "teacher", teacher.history_events))
        store = open_label_store(self.settings)
        try:
            data = self.data
            self.raw_soft = await teacher_labels(data.dataset, data.train, data.train_negatives, client, store,
                                                 "train", data.dense)
            self.raw_fresh = await teacher_labels(data.dataset, data.valid, None, client, store,
                                                  "valid, for calibration")
            scores = {name: await teacher_labels(data.dataset, split, None, client, store, name)
                      for name, split in (extra or {}).items()}
        finally:
            await client.close()
            self.label_hit_rate = store.hit_rate
            store.close()
        self._debiased.clear()
        return scores

    def use_labels(self, raw_soft: np.ndarray, raw_fresh: np.ndarray) -> None:
        """Soft labels a teacher gave outside this phase (an offline study scoring teachers in-process), on the
        training slates and the valid window, in this phase's event and candidate order."""
        if raw_soft.shape != self.data.train.labels.shape or raw_fresh.shape != self.data.valid.labels.shape:
            raise ValueError(f"labels of shape {raw_soft.shape} / {raw_fresh.shape} for windows of "
                             f"{self.data.train.labels.shape} / {self.data.valid.labels.shape}")
        self.raw_soft, self.raw_fresh = raw_soft, raw_fresh
        self._debiased.clear()

    def debiased(self, method: CalibrationMethod | None = None) -> tuple[np.ndarray, Calibration, DebiasReport]:
        """(soft labels, calibration, report): calibrated on the valid window with `method` (default: the
        settings'), then mapped into the student's negative-sampled space. Computed once per method."""
        method = method or self.settings.calibration
        if self.raw_soft is None or self.raw_fresh is None:
            raise RuntimeError("label() first")
        if method not in self._debiased:
            self._debiased[method] = self.debias(self.raw_soft, self.raw_fresh, self.settings.teacher.trained_version,
                                                 method)
        return self._debiased[method]

    def debias(self, soft: np.ndarray, fresh: np.ndarray, teacher_version: str,
               method: CalibrationMethod | None = None) -> tuple[np.ndarray, Calibration, DebiasReport]:
        """Debias any teacher's raw probabilities (the real one's, or a control's)."""
        calibration = fit_calibration(method or self.settings.calibration, teacher_version, fresh,
                                      self.data.valid.labels)
        soft = calibration.transform(soft)
        keep_rate = negative_keep_rate(self.settings, self.data.dataset)
        if keep_rate is not None:
            soft = to_sampled_space(soft, keep_rate)
        return soft, calibration, DebiasReport(method=calibration.method, ece_before=calibration.ece_before,
                                               ece_after=calibration.ece_after, negative_keep_rate=keep_rate)

    def train(self, distill: DistillConfig, soft_labels: np.ndarray | None,
              student_config: StudentConfig | None = None, label: str | None = None
              ) -> tuple[StudentModel, FitResult]:
        """Train one student (the baseline when `soft_labels` is None); seeded, so paired runs match."""
        torch.manual_seed(distill.seed)
        data = self.data
        model = StudentModel(data.dataset.schema, student_config or StudentConfig(), view=data.train.encoder.view_name)
        extras = dict(data.train.extras)
        if soft_labels is not None:
            extras["soft_label"] = soft_labels
        keep_rate = negative_keep_rate(self.settings, data.dataset)
        # The student's output gets the same sampling correction as the teacher's labels (a constant
        # logit shift: rankings and AUC are unchanged, calibration on full slates is restored).
        if keep_rate is not None:
            model.serving_logit_offset.fill_(math.log(keep_rate))
        result = fit(model, data.train.with_extras(**extras), data.valid,
                     lambda m, b: distill_loss(m, b, distill), lambda inputs: model(**inputs),
                     epochs=distill.epochs, batch_size=distill.batch_size, lr=distill.lr,
                     weight_decay=distill.weight_decay, patience=distill.patience, seed=distill.seed,
                     label=label or ("student" if distill.use_teacher else "baseline student"))
        return model, result

    def publish(self, model: StudentModel, distill: DistillConfig, holdout: EncodedSplit | None = None,
                version_prefix: str | None = None, anchor: bool = False) -> PublishResult:
        """Export, gate, publish (trained on this phase's training window with `distill`) and, with a server
        URL, promote. `anchor`: the version becomes the gate's anchor (the batch phase's student)."""
        settings = self.settings
        if version_prefix:
            settings = settings.model_copy(update={"version_prefix": version_prefix})
        return publish_and_promote(settings, model, holdout or self.data.gate,
                                   DataWindow(train_events=len(self.data.train)), asdict(distill), anchor)


async def run_batch(settings: WorkerSettings, student_config: StudentConfig | None = None) -> BatchReport:
    """The `worker run --mode batch` job: label, debias, train, evaluate, publish, save for the stream.
    Under torchrun it trains data-parallel (DDP); rank 0 labels first (the others then read the label
    store), and only rank 0 evaluates, publishes and saves."""
    ranks = distributed.init_from_env()
    world = ranks.world if ranks else 1
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    main = ranks is None or ranks.main
    started = time.perf_counter()
    phase = await asyncio.to_thread(BatchPhase, settings)
    distill = settings.distill
    report = BatchReport(task=settings.task, teacher_version=settings.teacher.trained_version,
                         train_events=len(phase.data.train), distill=asdict(distill), processes=world,
                         rank=ranks.rank if ranks else 0)
    soft, calibration = None, None
    if distill.use_teacher:
        if not main:
            await asyncio.to_thread(distributed.barrier)  # rank 0 labels; the store then serves the others
        await phase.label()
        if main:
            await asyncio.to_thread(distributed.barrier)
        report.label_hit_rate = phase.label_hit_rate
        soft, calibration, report.debias = phase.debiased()
    # Training, export and gating are CPU work: off the event loop.
    model, result = await asyncio.to_thread(phase.train, distill, soft, student_config)
    report.best_epoch = result.best_epoch
    if not main:
        return report
    report.valid = evaluate_split(lambda inputs: model(**inputs), phase.data.valid)
    report.test = evaluate_split(lambda inputs: model(**inputs), phase.data.holdout("test", settings))
    report.published = await asyncio.to_thread(lambda: phase.publish(model, distill, anchor=True))
    save_student(settings.target_state(phase.data.dataset.schema), model, calibration)
    report.seconds = round(time.perf_counter() - started, 1)
    seconds = sum(h["train_seconds"] for h in result.history)
    report.train_seconds = round(seconds, 2)
    report.train_examples_per_s = round(sum(h["examples"] for h in result.history) / max(seconds, 1e-9), 1)
    return report
