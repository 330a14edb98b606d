"""The teacher's own training job: fit on the training window, early-stop on valid AUC, write a
versioned checkpoint. Students never back-propagate into it (decoupled training).

Two families, named by `size`: the target-attention model (`tiny`, `medium`, `large`: slates of the
training window, pointwise) and the causal-transformer sequence model (`seq-xs` .. `seq-xl`: every
position of a user's sequence in one pass, sampled softmax; on the GPU where there is one)."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from recdistill.core.contracts.teacher import TeacherDataWindow, TeacherManifest
from recdistill.core.data.dataset import PreparedDataset, Task
from recdistill.core.evaluation import evaluate
from recdistill.core.features.encoder import Encoder
from recdistill.core.training import EncodedSplit, evaluate_split
from teacher_service.checkpoint import save_checkpoint
from teacher_service.device import Device, resolve_device
from teacher_service.families import architecture, family_of

__all__ = ["TeacherTrainConfig", "architecture", "train_teacher"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherTrainConfig:
    task: Task = "ctr"
    size: str = "medium"
    epochs: int = 20
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-5
    patience: int = 3
    seed: int = 0
    train_negatives: int = 8  # slate task: negatives per training event (evaluation uses all)
    max_train_events: int | None = None  # the most recent N training events (quick runs, tests)
    history_limit: int | None = None  # read only the most recent N events (a short-history control)
    # The most recent N events of the valid window are another job's holdout (the promotion gate's): early
    # stopping and the valid metrics read the valid window before them.
    holdout_events: int = 0
    device: Device = "auto"  # where it trains (the sequence family with bf16 autocast on CUDA)
    windows_per_batch: int = 8  # sequence family: user-sequence windows per optimiser step
    # Sequence family: stack the served logit with the match count, fitted on valid (`sequence.fit_stack`).
    stack_on_valid: bool = True


def train_teacher(data_dir: Path, out_dir: Path, config: TeacherTrainConfig,
                  device: torch.device | None = None) -> TeacherManifest:
    """`device`: resolved by the caller (the CLI); default: `config.device` resolved here."""
    family = family_of(config.size)  # an unknown size stops here
    arch = replace(family.sizes[config.size], history_limit=config.history_limit)
    device = device or resolve_device(config.device)
    torch.manual_seed(config.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    dataset = PreparedDataset(data_dir)
    # A short-history teacher needs no more of the history than it reads: train on that window.
    encoder = Encoder(dataset.schema, "teacher", history_len=config.history_limit)
    valid = EncodedSplit.build(dataset, encoder, "valid", config.task, exclude_last=config.holdout_events)
    test = EncodedSplit.build(dataset, encoder, "test", config.task)
    train_ids = dataset.split("train", config.task)[-(config.max_train_events or 0):]
    model, result = family.fit(dataset, encoder, arch, valid, config, device)

    def score(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**inputs)

    valid_metrics = (evaluate(valid.task, valid.labels, *result.valid_predictions, valid.user_ids)
                     if result.valid_predictions is not None else evaluate_split(score, valid))
    test_metrics = evaluate_split(score, test)
    weights_digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in model.state_dict().values()))
    train_ts = dataset.events["timestamp"].to_numpy()[train_ids]
    manifest = TeacherManifest(
        teacher_version=f"teacher-{config.task}{'-short' if config.history_limit else ''}-"
                        f"{weights_digest.hexdigest()[:12]}",
        task=config.task, size=config.size, family=family.name, config=model.config.to_dict(),
        parameters=sum(p.numel() for p in model.parameters()), schema_hash=dataset.schema.hash,
        dataset=dataset.manifest.dataset,
        data_window=TeacherDataWindow(train_start_ts=int(train_ts.min()), train_end_ts=int(train_ts.max()),
                                      train_events=len(train_ids)),
        train=asdict(config), best_epoch=result.best_epoch, history=result.history, valid=valid_metrics,
        test=test_metrics, seconds=round(time.perf_counter() - started, 1), stack=result.stack)
    save_checkpoint(out_dir, model, dataset.schema, manifest)
    logger.info("teacher %s: valid auc %.4f, test auc %.4f (%.0fs)", manifest.teacher_version,
                valid_metrics["auc"], test_metrics["auc"], manifest.seconds)
    return manifest
