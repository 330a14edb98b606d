"""Every batch-phase student of one task, on one set of splits and one set of teacher labels: the
paired baseline and distilled students per seed, the ablations and the controls."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from distill_worker.batch import BatchPhase
from distill_worker.debias import Calibration
from distill_worker.settings import DistillConfig, WorkerSettings
from distill_worker.student import StudentModel
from recdistill.core.evaluation import evaluate
from recdistill.core.training import EncodedSplit, predict

logger = logging.getLogger(__name__)
LABEL_SMOOTHING = 0.1

# Each variant: how it differs from the full method. Ablations remove one mechanism; controls replace
# the teacher by something that is not one, to show how much "distillation" a mere soft target gives.
VARIANTS: dict[str, str] = {
    "baseline": "labels only, no teacher (same architecture, data, seed)",
    "distilled": "full method: auxiliary head, calibrated teacher labels, sampling-space correction, "
                 "teacher labels on items the user had not interacted with before",
    "plain_kd": "ablation: teacher term on the serving head instead of the auxiliary head",
    "no_calibration": "ablation: raw teacher probabilities (no Platt calibration on the fresh window)",
    "no_unexposed_labels": "ablation: no teacher labels for candidates without an observed label",
    "self_distillation": "control: the baseline student (same seed) as its own teacher",
    "label_smoothing": f"control: smoothed hard labels ({LABEL_SMOOTHING}) as the soft target",
    "short_history_teacher": "control: a teacher of the same architecture and size that reads only the "
                             "student's 10 most recent events (separates what the long history gives from "
                             "what capacity gives), distilled exactly like the full method",
}


@dataclass
class RunResult:
    variant: str
    seed: int
    model: StudentModel
    valid: dict[str, float]
    test: dict[str, float]
    test_scores: np.ndarray  # [events, candidates], for the bootstrap
    best_epoch: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {"seed": self.seed, "best_epoch": self.best_epoch, "seconds": self.seconds, "valid": self.valid,
                "test": self.test}


class BatchExperiment:
    """The demo's experiment design over the worker's batch phase (`BatchPhase`): which students to
    train, with which soft labels and objective; labelling, debiasing and training are the worker's."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.distill = settings.distill
        self.phase = BatchPhase(settings)
        self.data = self.phase.data
        self.test: EncodedSplit = self.data.holdout("test", settings)
        self.teacher_test_scores: np.ndarray | None = None  # the teacher's scores on the test window
        self.debias_report: dict[str, Any] = {}
        self.calibration: Calibration | None = None  # the full method's, which the stream phase reuses
        self.runs: dict[tuple[str, int], RunResult] = {}
        # Debiased soft labels of other teachers (controls), labelled through their own Triton servers.
        self.other_teachers: dict[str, np.ndarray] = {}

    async def label(self) -> None:
        """Teacher soft labels on the training and valid windows, and its scores on the test window."""
        scores = await self.phase.label({"test, for the report": self.test})
        self.teacher_test_scores = scores["test, for the report"]

    def teacher_test_metrics(self) -> dict[str, float]:
        assert self.teacher_test_scores is not None, "label() first"
        return evaluate(self.test.task, self.test.labels, self.teacher_test_scores, self.test.labels >= 0,
                        self.test.user_ids)

    def _soft_labels(self, variant: str, seed: int) -> np.ndarray | None:
        if variant == "baseline":
            return None
        if variant in self.other_teachers:
            return self.other_teachers[variant]
        if variant == "short_history_teacher":
            raise RuntimeError("the short-history teacher has not labelled this window (other_teachers is empty)")
        if variant == "label_smoothing":
            labels, observed = self.data.train.labels, self.data.train.extras["observed"]
            prior = float((labels * observed).sum() / observed.sum())
            return (labels * (1 - LABEL_SMOOTHING) + LABEL_SMOOTHING * prior).astype(np.float32)
        if variant == "self_distillation":
            baseline = self.run("baseline", seed).model
            raw = predict(lambda inputs: baseline(**inputs), self.data.train)[0]
            fresh = predict(lambda inputs: baseline(**inputs), self.data.valid)[0]
            return self.phase.debias(raw, fresh, f"baseline-seed{seed}")[0]
        soft, calibration, self.debias_report[variant] = self.phase.debiased(
            "none" if variant == "no_calibration" else None)
        if variant == "distilled":
            self.calibration = calibration
        return soft

    def _distill_config(self, variant: str, seed: int) -> DistillConfig:
        config = replace(self.distill, seed=seed, use_teacher=variant != "baseline")
        if variant == "plain_kd":
            config = replace(config, head="serving")
        if variant == "no_unexposed_labels":
            config = replace(config, unexposed_weight=0.0)
        return config

    def run(self, variant: str, seed: int) -> RunResult:
        """Train (once) the student of `variant` with `seed`, and score it on valid and test."""
        if (variant, seed) in self.runs:
            return self.runs[(variant, seed)]
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; one of {sorted(VARIANTS)}")
        started = time.perf_counter()
        soft = self._soft_labels(variant, seed)
        model, fit = self.phase.train(self._distill_config(variant, seed), soft,
                                      label=f"{self.settings.task} {variant} seed {seed}")
        with torch.no_grad():
            scores, mask = predict(lambda inputs: model(**inputs), self.test)
        test = evaluate(self.test.task, self.test.labels, scores, mask, self.test.user_ids)
        result = RunResult(variant, seed, model, fit.history[fit.best_epoch - 1], test, scores, fit.best_epoch,
                           round(time.perf_counter() - started, 1))
        logger.info("%s %s seed %d: test auc %.4f (%.0fs)", self.settings.task, variant, seed, test["auc"],
                    result.seconds)
        self.runs[(variant, seed)] = result
        return result
