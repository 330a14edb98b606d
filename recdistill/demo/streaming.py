"""Offline reruns of the streaming phase over the sample log the live stage recorded: the stream
ablations (inverse-propensity weights, position tower) against the same batch student and traffic."""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from distill_worker.debias import Calibration
from distill_worker.labels import LabelStore
from distill_worker.settings import TeacherClientSettings
from distill_worker.stream import StreamConfig, StreamWorker
from distill_worker.student import StudentModel
from distill_worker.teacher_client import TeacherClient
from distill_worker.trainer import DistillConfig
from recdistill.data.dataset import PreparedDataset
from recdistill.features.encoder import Encoder

STREAM_VARIANTS: dict[str, str] = {
    "batch_only": "batch phase only (no streaming)",
    "stream": "batch + stream (replayed through again offline, as the ablations are)",
    "stream_no_ipw": "ablation: streaming without inverse sampling-probability weights",
    "stream_no_position_tower": "ablation: streaming without the train-only position tower",
}


async def rerun_stream(variant: str, dataset: PreparedDataset, samples: Path, labels_db: Path, work_dir: Path,
                       teacher: TeacherClientSettings, distill: DistillConfig, config: StreamConfig,
                       batch_model: StudentModel, calibration: Calibration | None, seed: int) -> StudentModel:
    """The stream worker over a copy of `samples`, from a copy of `batch_model`; nothing is published."""
    if variant == "batch_only":
        return batch_model
    torch.manual_seed(seed)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    shutil.copytree(samples, work_dir / "samples")  # the worker commits consumer offsets into the log
    shutil.copy(labels_db, work_dir / "labels.sqlite")  # the live stage's teacher labels: no new calls
    model = copy.deepcopy(batch_model)
    if variant == "stream_no_position_tower":
        model = StudentModel(dataset.schema, replace(batch_model.config, position_tower=False))
        model.load_state_dict(batch_model.state_dict(), strict=False)
    # All of the log in one read: each request is trained with all of its feedback.
    config = replace(config, max_records=1 << 30, inverse_propensity=variant != "stream_no_ipw")
    client = TeacherClient(teacher, Encoder(dataset.schema, "teacher"))
    store = LabelStore(work_dir / "labels.sqlite")
    worker = StreamWorker(dataset, work_dir / "samples", work_dir / "state", client, store, distill, config,
                          initial_model=model, soft_transform=calibration.transform if calibration else None)
    try:
        while True:
            result = await worker.step(now=float("inf"))
            if not result["read"] and not result["trained"]:
                break
    finally:
        await client.close()
        store.close()
    shutil.rmtree(work_dir, ignore_errors=True)
    return worker.model
