"""Student training: labels on the serving head plus a weighted distillation term against the
teacher's soft labels, on the auxiliary head (decoupled, the default) or on the serving head (plain
KD, for the ablation). With the teacher switched off the same code trains the baseline student.

Batch extras (see `recdistill.core.training.EncodedSplit.extras`):
  soft_label [B, C]  the teacher's (debiased) probability per candidate
  observed   [B, C]  1 where an observed label exists (0: candidates with teacher labels only)
  weight     [B]     per-example weight (inverse sampling probability)
  position   [B, C]  logged position + 1 (0: unknown), for the train-only position tower
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill_worker.settings import DistillConfig
from distill_worker.student import StudentModel
from recdistill.core.training import Batch

_EPS = 1e-6


def _masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum().clamp(min=_EPS)


def _kd_cross_entropy(logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, soft, reduction="none")


def _kd_logit_mse(logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    return (logits - torch.log(soft / (1 - soft))) ** 2


# `DistillConfig.kd_loss` -> the per-candidate distillation term (logits, soft labels) -> loss.
KD_LOSSES = {"ce": _kd_cross_entropy, "mse": _kd_logit_mse}


def distill_loss(model: StudentModel, batch: Batch, config: DistillConfig, full_traffic: bool = False
                 ) -> torch.Tensor:
    """`full_traffic`: the batch holds whole served slates (the stream), not negative-sampled ones, so
    both heads are trained through the exported logit offset, in the space the served scores live in."""
    serving, teacher_head = model.heads(**batch.inputs)
    if full_traffic:
        serving, teacher_head = serving + model.serving_logit_offset, teacher_head + model.serving_logit_offset
    mask = batch.mask.float()
    observed = batch.extras.get("observed", mask) * mask
    example_weight = batch.extras.get("weight", torch.ones(mask.shape[0])).unsqueeze(1)
    positions = batch.extras.get("position")
    serving_train = serving if positions is None else serving + model.position_logit(positions)
    label_loss = F.binary_cross_entropy_with_logits(serving_train, batch.labels, reduction="none")
    loss = _masked_mean(label_loss, observed * example_weight)
    if not config.use_teacher:
        return loss
    soft = batch.extras["soft_label"].clamp(_EPS, 1 - _EPS)
    logits = {"aux": teacher_head, "serving": serving}[config.head]
    kd = KD_LOSSES[config.kd_loss](logits, soft)
    kd_weight = torch.where(observed > 0, 1.0, config.unexposed_weight) * mask * example_weight
    return loss + config.kd_weight * _masked_mean(kd, kd_weight)
