"""The teacher families, in one table: a size names its family, its architecture, the model class and the
function that fits it on a device. Everything that asks "which family is this size" (training, checkpoints,
the demo's teacher cache, the CLI) asks here.

- `attention`: target attention over the whole history (`tiny`, `medium`, `large`; `teacher_service/model.py`),
  fitted pointwise on the slates of the training window.
- `sequence`: a causal transformer (`seq-3xs` .. `seq-xl`; `teacher_service/sequence.py`), fitted over every
  position of each user's sequence in one pass (sampled softmax), bf16 autocast on CUDA."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F

from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.errors import DataError
from recdistill.core.features.encoder import Encoder
from recdistill.core.features.schema import FeatureSchema
from recdistill.core.nn import ModelConfig
from recdistill.core.training import Batch, EncodedSplit, FitResult, fit
from teacher_service.model import TEACHER_SIZES, TeacherConfig, TeacherModel
from teacher_service.sequence import SEQUENCE_SIZES, SequenceConfig, SequenceTeacher, fit_stack
from teacher_service.sequence_train import check_memory, fit_sequence, training_windows

FamilyName = Literal["attention", "sequence"]
# (dataset, encoder, architecture, valid window, training config, device) -> (trained model on the CPU, result)
FitFn = Callable[[PreparedDataset, Encoder, Any, EncodedSplit, Any, torch.device], tuple[torch.nn.Module, FitResult]]


@dataclass(frozen=True)
class Family:
    name: FamilyName
    sizes: Mapping[str, ModelConfig]
    config_type: type[ModelConfig]
    model: Callable[[FeatureSchema, Any], torch.nn.Module]
    fit: FitFn
    description: str

    def build(self, schema: FeatureSchema, config: dict[str, Any]) -> torch.nn.Module:
        """An (untrained) model of this family from a checkpoint's config."""
        return self.model(schema, self.config_type.from_dict(config))


def _on(batch: Batch, device: torch.device) -> Batch:
    return replace(batch, inputs={k: v.to(device) for k, v in batch.inputs.items()}, labels=batch.labels.to(device),
                   mask=batch.mask.to(device))


def _fit_attention(dataset: PreparedDataset, encoder: Encoder, arch: Any, valid: EncodedSplit, config: Any,
                   device: torch.device) -> tuple[torch.nn.Module, FitResult]:
    negatives = config.train_negatives if config.task == "slate" else None
    train = EncodedSplit.build(dataset, encoder, "train", config.task, negatives, config.max_train_events)
    model = TeacherModel(dataset.schema, arch).to(device)

    def bce(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        batch = _on(batch, device)
        losses = F.binary_cross_entropy_with_logits(model.logits(**batch.inputs), batch.labels, reduction="none")
        return (losses * batch.mask).sum() / batch.mask.sum()

    def score(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**{k: v.to(device) for k, v in inputs.items()}).cpu()

    result = fit(model, train, valid, bce, score, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                 weight_decay=config.weight_decay, patience=config.patience, seed=config.seed,
                 label=f"teacher[{config.task}]")
    return model.cpu(), result


def _fit_sequence(dataset: PreparedDataset, encoder: Encoder, arch: Any, valid: EncodedSplit, config: Any,
                  device: torch.device) -> tuple[torch.nn.Module, FitResult]:
    import logging

    model = SequenceTeacher(dataset.schema, arch)
    check_memory(config.size, model, config.windows_per_batch, device)  # before any training
    windows = training_windows(dataset, encoder, float(dataset.manifest.split.valid_start_ts), arch.train_len,
                               config.max_train_events)
    logging.getLogger(__name__).info(
        "sequence teacher %s: %d windows, %d events, %s parameters, on %s", config.size, len(windows),
        sum(len(w.items) for w in windows), f"{sum(p.numel() for p in model.parameters()):,}", device)
    result = fit_sequence(model, windows, valid, epochs=config.epochs, batch_size=config.windows_per_batch,
                          lr=config.lr, weight_decay=config.weight_decay, patience=config.patience, seed=config.seed,
                          device=device)
    model = model.cpu()
    if config.stack_on_valid:
        stack, served = fit_stack(model, valid)
        result = replace(result, stack=stack, valid_predictions=served)
        logging.getLogger(__name__).info("sequence teacher %s: score stack %s", config.size, result.stack)
    return model, result


FAMILIES: dict[FamilyName, Family] = {
    "attention": Family("attention", TEACHER_SIZES, TeacherConfig, TeacherModel, _fit_attention, "target attention"),
    "sequence": Family("sequence", SEQUENCE_SIZES, SequenceConfig, SequenceTeacher, _fit_sequence,
                       "causal transformer"),
}


def family_of(size: str) -> Family:
    """The family a size names; an unknown size names them all."""
    for family in FAMILIES.values():
        if size in family.sizes:
            return family
    raise DataError(f"unknown teacher size {size!r}: " + " or ".join(
        f"{', '.join(f.sizes)} ({f.description})" for f in FAMILIES.values()))


def architecture(size: str) -> ModelConfig:
    """The architecture a size names, in either family."""
    return family_of(size).sizes[size]
