"""Batch phase: label the historical training window with the teacher (through Triton), debias the
labels, train the student, export it, gate it and promote it."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from distill_worker.debias import Calibration, to_sampled_space
from distill_worker.export import export_onnx
from distill_worker.labels import LabelRequest, LabelStore
from distill_worker.promote import GateConfig, gate, promote
from distill_worker.settings import TeacherClientSettings, WorkerSettings
from distill_worker.student import StudentConfig, StudentModel
from distill_worker.teacher_client import TeacherClient
from distill_worker.trainer import DistillConfig, distill_loss
from recdistill.artifact import ensure_registry, publish_version
from recdistill.data.dataset import PreparedDataset
from recdistill.features.encoder import Encoder
from recdistill.logs import STDERR
from recdistill.training import EncodedSplit, evaluate_split, fit

logger = logging.getLogger(__name__)
LABEL_CHUNK = 4_096
BATCH_STUDENT = "student-batch.pt"


async def teacher_labels(dataset: PreparedDataset, event_ids: np.ndarray, negatives: int,
                         client: TeacherClient, store: LabelStore, what: str) -> np.ndarray:
    """Soft labels [N, 1 + negatives] for the slate of each event (store first, then the teacher)."""
    encoder = Encoder(dataset.schema, "teacher")
    out = np.zeros((len(event_ids), 1 + negatives), dtype=np.float32)
    with Progress(transient=True, console=STDERR) as progress:
        bar = progress.add_task(f"teacher labels ({what})", total=len(event_ids))
        for start in range(0, len(event_ids), LABEL_CHUNK):
            chunk = event_ids[start:start + LABEL_CHUNK]
            contexts = dataset.contexts(encoder, chunk, "slate", negatives)
            requests = [LabelRequest(f"{dataset.manifest['dataset']}:{e}", dataset.candidates(int(e), "slate",
                                                                                             negatives), c)
                        for e, c in zip(chunk, contexts, strict=True)]
            out[start:start + len(chunk)] = np.stack(await store.label(requests, client))
            progress.update(bar, advance=len(chunk))
    return out


def negative_keep_rate(settings: WorkerSettings, dataset: PreparedDataset) -> float:
    """Share of a slate's logged negatives the student trains on with hard labels."""
    return settings.observed_negatives / dataset.manifest["slate_negatives"]


def _student_split(dataset: PreparedDataset, split: str, negatives: int, limit: int | None = None) -> EncodedSplit:
    return EncodedSplit.build(dataset, Encoder(dataset.schema, "student"), split, "slate", negatives, limit)


async def run_batch(settings: WorkerSettings, teacher: TeacherClientSettings, distill: DistillConfig,
                    student_config: StudentConfig | None = None, gate_config: GateConfig | None = None
                    ) -> dict[str, Any]:
    torch.manual_seed(distill.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    dataset = PreparedDataset(settings.data)
    negatives = settings.observed_negatives + settings.teacher_negatives
    train = _student_split(dataset, "train", negatives, settings.max_train_events)
    # All logged negatives, as the teacher is evaluated.
    valid = _student_split(dataset, "valid", None, settings.max_holdout_events)
    observed = np.zeros(train.labels.shape, dtype=np.float32)
    observed[:, : 1 + settings.observed_negatives] = 1.0
    train.extras["observed"] = observed
    report: dict[str, Any] = {"teacher_version": teacher.teacher_version, "train_events": len(train),
                              "distill": asdict(distill)}
    if distill.use_teacher:
        client = TeacherClient(teacher, Encoder(dataset.schema, "teacher"))
        store = LabelStore(settings.state_dir / "labels.sqlite")
        try:
            soft = await teacher_labels(dataset, train.event_ids, negatives, client, store, "train")
            fresh = await teacher_labels(dataset, valid.event_ids, dataset.manifest["slate_negatives"], client,
                                         store, "valid, for calibration")
        finally:
            await client.close()
            report["label_hit_rate"] = store.hit_rate
            store.close()
        calibration = Calibration(settings.calibration, teacher.teacher_version).fit(fresh, valid.labels)  # type: ignore[arg-type]
        soft = calibration.transform(soft)
        if settings.sampling_correction:
            soft = to_sampled_space(soft, negative_keep_rate(settings, dataset))
            report["sampling_correction"] = {"negative_keep_rate": negative_keep_rate(settings, dataset)}
        train.extras["soft_label"] = soft
        report["calibration"] = {"method": calibration.method, "ece_before": calibration.ece_before,
                                 "ece_after": calibration.ece_after}
    model = StudentModel(dataset.schema, student_config or StudentConfig())
    # Training, export and gating are CPU work: off the event loop.
    await asyncio.to_thread(_train_and_publish, settings, dataset, model, train, valid, distill, report,
                            gate_config or GateConfig())
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _train_and_publish(settings: WorkerSettings, dataset: PreparedDataset, model: StudentModel,
                       train: EncodedSplit, valid: EncodedSplit, distill: DistillConfig, report: dict[str, Any],
                       gate_config: GateConfig) -> None:
    def score(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**inputs)

    # The student's output gets the same sampling correction as the teacher's labels (a constant
    # logit shift: rankings and AUC are unchanged, calibration on full slates is restored).
    if settings.sampling_correction:
        model.serving_logit_offset.fill_(math.log(negative_keep_rate(settings, dataset)))
    result = fit(model, train, valid, lambda m, b: distill_loss(m, b, distill), score, epochs=distill.epochs,
                 batch_size=distill.batch_size, lr=distill.lr, patience=distill.patience, seed=distill.seed,
                 label="student" if distill.use_teacher else "baseline student")
    report["best_epoch"] = result.best_epoch
    report["valid"] = evaluate_split(score, valid)
    report["test"] = evaluate_split(score, _student_split(dataset, "test", None, settings.max_holdout_events))
    report["published"] = publish_and_promote(settings, model, valid, report, gate_config)
    save_student(settings.state_dir / BATCH_STUDENT, model)


def save_student(path: Path, model: StudentModel) -> None:
    """The batch phase's student, from which the streaming phase continues."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"config": model.config.to_dict(), "model": model.state_dict()}, tmp)
    os.replace(tmp, path)


def load_student(path: Path, dataset: PreparedDataset) -> StudentModel | None:
    if not path.exists():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = StudentModel(dataset.schema, StudentConfig.from_dict(saved["config"]))
    model.load_state_dict(saved["model"])
    return model


def publish_and_promote(settings: WorkerSettings, model: StudentModel, holdout: EncodedSplit,
                        report: dict[str, Any], gate_config: GateConfig) -> str | None:
    """Export, gate, publish and (with a server URL) promote; returns the version, or None if refused."""
    probe, _ = holdout.encoder.assemble(holdout.contexts[:64])
    onnx_model = export_onnx(model, probe)
    verdict = gate(onnx_model, model, probe, holdout, settings.registry, gate_config)
    report["gate"] = {"accepted": verdict.accepted, "reasons": verdict.reasons, "metrics": verdict.metrics}
    if not verdict.accepted:
        logger.warning("candidate refused, the active version keeps serving: %s", "; ".join(verdict.reasons))
        return None
    version = f"{settings.version_prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    ensure_registry(settings.registry, holdout.encoder.schema)
    publish_version(settings.registry, version, onnx_model, {
        "schema_hash": holdout.encoder.schema.hash, "teacher_version": report.get("teacher_version"),
        "data_window": {"train_events": report.get("train_events")}, "metrics": verdict.metrics,
        "config": model.config.to_dict(), "distill": report.get("distill"),
    })
    if settings.server_url and settings.admin_token:
        promote(settings.server_url, settings.admin_token, version)
    return version
