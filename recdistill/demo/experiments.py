"""Every batch-phase student of one task, on one set of splits and one set of teacher labels: the
paired baseline and distilled students per seed, the ablations and the controls."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch

from distill_worker import (
    BatchPhase,
    Calibration,
    DistillConfig,
    StudentConfig,
    StudentModel,
    TeacherClientSettings,
    WorkerSettings,
)
from recdistill.core.contracts.worker import DebiasReport
from recdistill.core.evaluation import evaluate
from recdistill.core.fileio import atomic_write_text
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
    "no_unexposed_labels": "ablation and channel control: no teacher labels for candidates without an observed "
                           "label (no dense rows)",
    "no_user_channel": "channel control: the full method with the student's user channel off",
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
    best_epoch: int
    seconds: float
    test: dict[str, float] = field(default_factory=dict)  # scored once, for the run that is kept
    test_scores: np.ndarray | None = None  # [events, candidates], for the bootstrap

    def summary(self) -> dict[str, Any]:
        return {"seed": self.seed, "best_epoch": self.best_epoch, "seconds": self.seconds, "valid": self.valid,
                "test": self.test}


# Soft targets without the long-history teacher (the first three), and the method without one of its channels
# (the last two): the attributable gain is the method's over the best of the baseline and all of them.
CONTROLS = ("self_distillation", "label_smoothing", "short_history_teacher", "no_unexposed_labels", "no_user_channel")
# What each control says about the channel the long history travels through.
CHANNELS: dict[str, str] = {
    "short_history_teacher": "dense rows labelled by the 10-event teacher",
    "self_distillation": "dense rows labelled by the student itself",
    "no_unexposed_labels": "no dense rows",
    "no_user_channel": "the user channel off",
}

# Variants whose objective has a teacher term: they tune its weight as well as the regulariser.
TEACHER_TERM = ("distilled", "self_distillation", "label_smoothing", "short_history_teacher")


@dataclass(frozen=True)
class TuningGrid:
    """The same size of search on the valid window for the baseline, the method and every control: the
    regulariser for all; the teacher-term weight for those that have one, the learning rate in its place for
    those that do not (seed 0; valid AUC decides). Every variant tries as many points."""

    weight_decay: tuple[float, ...] = (0.0,)
    kd_weight: tuple[float, ...] = ()  # empty: keep DistillConfig.kd_weight
    lr: tuple[float, ...] = ()  # empty: keep DistillConfig.lr

    def __post_init__(self) -> None:
        if len(self.kd_weight) != len(self.lr):
            raise ValueError(f"unequal search: {len(self.kd_weight)} teacher-term weights against {len(self.lr)} "
                             "learning rates for the variants without a teacher term")

    def points(self, variant: str) -> list[dict[str, float]]:
        name, values = ("kd_weight", self.kd_weight) if variant in TEACHER_TERM else ("lr", self.lr)
        return [{"weight_decay": wd} | ({name: v} if v is not None else {})
                for wd, v in itertools.product(self.weight_decay, values or (None,))]


@dataclass
class Tuning:
    """What the search chose for one variant, and the valid AUC of every point it tried."""

    variant: str
    chosen: dict[str, float]
    valid_auc: list[dict[str, float]] = field(default_factory=list)  # each point with its "valid_auc"
    cached: bool = False

    def summary(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "tried": self.valid_auc, "cached": self.cached}


def _point_key(point: dict[str, float]) -> str:
    return json.dumps({k: v for k, v in point.items() if k != "valid_auc"}, sort_keys=True)


class BatchExperiment:
    """The demo's experiment design over the worker's batch phase (`BatchPhase`): which students to
    train, with which soft labels and objective; labelling, debiasing and training are the worker's."""

    def __init__(self, settings: WorkerSettings, student: StudentConfig | None = None) -> None:
        self.settings = settings
        self.distill = settings.distill
        self.student = student or StudentConfig()  # every variant's architecture
        self.phase = BatchPhase(settings)
        self.data = self.phase.data
        self.test: EncodedSplit = self.data.holdout("test", settings)
        self.teacher_test_scores: np.ndarray | None = None  # the teacher's (seed 0) scores on the test window
        # Every teacher seed's labelled phase and test scores; student seed s learns from teacher s % seeds.
        self.teacher_phases: list[BatchPhase] = [self.phase]
        self.teacher_seed_scores: list[np.ndarray] = []
        self.debias_report: dict[str, DebiasReport] = {}
        self.calibration: Calibration | None = None  # the full method's, which the stream phase reuses
        self.runs: dict[tuple[str, int], RunResult] = {}
        # Debiased soft labels of other teachers (controls), labelled through their own Triton servers.
        self.other_teachers: dict[str, np.ndarray] = {}
        self.tuning: dict[str, Tuning] = {}  # variant -> what the valid search chose (ablations: the method's)

    async def label(self) -> None:
        """Teacher soft labels on the training and valid windows, and its scores on the test window."""
        scores = await self.phase.label({"test, for the report": self.test})
        self.teacher_test_scores = scores["test, for the report"]
        self.teacher_seed_scores = [self.teacher_test_scores]

    @property
    def has_user_channel(self) -> bool:
        """Whether the student's view declares a user channel (else the channel control is the method itself)."""
        return self.data.dataset.schema.view(self.data.train.encoder.view_name).user_buckets > 0

    def controls(self) -> list[str]:
        """The controls this experiment can run: the short-history teacher's only once it has labelled."""
        return [c for c in CONTROLS if (c != "short_history_teacher" or c in self.other_teachers)
                and (c != "no_user_channel" or self.has_user_channel)]

    async def label_with(self, teacher: TeacherClientSettings) -> tuple[BatchPhase, np.ndarray]:
        """Another teacher's labels on the same windows (through its own Triton): (its phase, test scores)."""
        phase = BatchPhase(self.settings.model_copy(update={"teacher": teacher}), data=self.data)
        scores = await phase.label({"test": self.test})
        return phase, scores["test"]

    def metrics(self, scores: np.ndarray) -> dict[str, float]:
        return evaluate(self.test.task, self.test.labels, scores, self.test.labels >= 0, self.test.user_ids)

    def teacher_test_metrics(self) -> dict[str, float]:
        """The teacher's test metrics, averaged over its seeds."""
        assert self.teacher_seed_scores, "label() first"
        rows = [self.metrics(scores) for scores in self.teacher_seed_scores]
        return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}

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
        teacher_seed = seed % len(self.teacher_phases)
        soft, calibration, report = self.teacher_phases[teacher_seed].debiased(
            "none" if variant == "no_calibration" else None)
        if teacher_seed == 0:
            self.debias_report[variant] = report
            if variant == "distilled":
                self.calibration = calibration
        return soft

    def distill_config(self, variant: str, seed: int, point: dict[str, float] | None = None) -> DistillConfig:
        config = replace(self.distill, seed=seed, use_teacher=variant != "baseline")
        if point is None:
            tuned = self.tuning.get(variant)
            if tuned is None and variant not in ("baseline", *TEACHER_TERM):
                tuned = self.tuning.get("distilled")  # an ablation changes one mechanism of the method, not its tuning
            point = tuned.chosen if tuned else None
        if point:
            config = replace(config, **point)
        if variant == "plain_kd":
            config = replace(config, head="serving")
        if variant == "no_unexposed_labels":
            config = replace(config, unexposed_weight=0.0)
        return config

    def _tuning_key(self, variant: str, grid: list[dict[str, float]] | None = None) -> str:
        """Everything a point's valid AUC depends on: the data, the schema, the windows, the negatives, the
        student's architecture, the objective and the soft labels themselves (rounded, so float noise in
        serving does not miss the cache). (Caches written before points were cached one by one also hashed
        their `grid`.)"""
        soft = self._soft_labels(variant, 0)
        labels = "" if soft is None else hashlib.sha256(np.round(soft, 5).tobytes()).hexdigest()
        manifest = self.data.dataset.manifest
        settings = self.settings
        payload = {"source": manifest.source_sha256, "schema": self.data.dataset.schema.hash,
                   "split": msgspec.to_builtins(manifest.split), "slate_negatives": manifest.slate_negatives,
                   "task": settings.task, "variant": variant, "max_train_events": settings.max_train_events,
                   "max_holdout_events": settings.max_holdout_events, "gate_holdout": settings.gate.holdout_events,
                   "window_events": settings.window_events, "dense": [settings.dense_own, settings.dense_popular],
                   "negatives": [settings.observed_negatives, settings.teacher_negatives],
                   "debias": [settings.calibration, settings.sampling_correction],
                   "student": self.student.to_dict(), "distill": asdict(self.distill),
                   "soft_labels": labels} | ({"grid": grid} if grid is not None else {}) \
            | ({"scenario": settings.scenario} if settings.scenario else {})  # another view (the first's: none)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def _tried_before(self, variant: str, points: list[dict[str, float]], cache: Path) -> tuple[Path, list[dict]]:
        """The cache file of `variant` and every point it holds (each with its valid AUC)."""
        path = cache / f"tuning-{self.settings.task}-{variant}-{self._tuning_key(variant)}.json"
        if path.exists():
            return path, json.loads(path.read_text())["tried"]
        legacy = cache / f"tuning-{self.settings.task}-{variant}-{self._tuning_key(variant, points)}.json"
        return path, json.loads(legacy.read_text())["tried"] if legacy.exists() else []

    def tune(self, variant: str, grid: TuningGrid, cache: Path | None = None) -> Tuning:
        """Choose `variant`'s regulariser (and teacher-term weight) on the valid window, with seed 0; the run of
        the chosen point is kept as the variant's seed-0 run. Each point's valid AUC is cached by content hash,
        so a wider grid trains only its new points; a chosen point from the cache has its seed-0 student
        trained again (the test window plays no part)."""
        if variant in self.tuning:
            return self.tuning[variant]
        points = grid.points(variant)
        path, before = self._tried_before(variant, points, cache) if cache is not None else (None, [])
        known = {_point_key(p): p["valid_auc"] for p in before}
        trained: dict[str, RunResult] = {}
        for point in points:
            if _point_key(point) not in known:
                result = trained[_point_key(point)] = self._train(variant, 0, point)
                known[_point_key(point)] = round(result.valid["auc"], 6)
        tried = [point | {"valid_auc": known[_point_key(point)]} for point in points]
        chosen = max(points, key=lambda point: known[_point_key(point)])
        self.tuning[variant] = Tuning(variant, chosen, tried, cached=not trained)
        if _point_key(chosen) in trained:
            self.runs[(variant, 0)] = self._score_test(trained[_point_key(chosen)])
        if path is not None and trained:
            path.parent.mkdir(parents=True, exist_ok=True)
            every = [*(p for p in before if _point_key(p) not in trained), *tried]
            atomic_write_text(path, json.dumps({"tried": every}, indent=2))
        logger.info("%s %s: chose %s on valid (%d of %d points from the cache)", self.settings.task, variant,
                    chosen, len(points) - len(trained), len(points))
        return self.tuning[variant]

    def run(self, variant: str, seed: int) -> RunResult:
        """Train (once) the student of `variant` with `seed` (with its tuned settings), and score it."""
        if (variant, seed) not in self.runs:
            self.runs[(variant, seed)] = self._score_test(self._train(variant, seed))
        return self.runs[(variant, seed)]

    def _score_test(self, result: RunResult) -> RunResult:
        with torch.no_grad():
            result.test_scores, mask = predict(lambda inputs: result.model(**inputs), self.test)
        result.test = evaluate(self.test.task, self.test.labels, result.test_scores, mask, self.test.user_ids)
        logger.info("%s %s seed %d: test auc %.4f", self.settings.task, result.variant, result.seed,
                    result.test["auc"])
        return result

    def _train(self, variant: str, seed: int, point: dict[str, float] | None = None) -> RunResult:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; one of {sorted(VARIANTS)}")
        started = time.perf_counter()
        soft = self._soft_labels(variant, seed)
        student = replace(self.student, user_channel=False) if variant == "no_user_channel" else self.student
        model, fit = self.phase.train(self.distill_config(variant, seed, point), soft, student,
                                      label=f"{self.settings.task} {variant} seed {seed}")
        result = RunResult(variant, seed, model, fit.history[fit.best_epoch - 1], fit.best_epoch,
                           round(time.perf_counter() - started, 1))
        logger.info("%s %s seed %d %s: valid auc %.4f (%.0fs)", self.settings.task, variant, seed, point or "",
                    result.valid["auc"], result.seconds)
        return result
