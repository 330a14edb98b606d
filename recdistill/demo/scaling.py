"""The teacher-scaling study (`recdistill study scaling`): teachers of the sequence family across sizes and
history limits, each distilled into the same student on the same paired seeds, against the same baseline
and controls; a table, `report.json` and plots of what transfers as the teacher grows and reads further back.

It is an offline experiment: each teacher scores the training, valid and test windows in-process, through
the same model and the same encoder view Triton serves (`teacher_service.checkpoint.load_checkpoint`), which
keeps a grid of many teachers affordable; `recdistill demo` measures the served path. Teachers are trained
once per content hash (`recdistill.demo.teachers.train_or_reuse`), so a wider grid trains only its new cells.

Per teacher (size, limit), on the test window, with user-level intervals (`recdistill.demo.stats`):
teacher AUC, distilled student AUC, raw transferability (student - baseline) / (teacher - baseline), and
attributable transferability, whose reference is the best of the baseline, label smoothing,
self-distillation and, for a teacher reading more than 10 events, the student distilled from the same
size's 10-event teacher (what capacity alone gives). Choices: none are made on test; the student's
schedule and the teacher-term weight are fixed, the same for every cell.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill_worker import BatchPhase, DistillConfig, GateConfig, TeacherClientSettings, WorkerSettings
from recdistill.core.bootstrap import RankedScores, Users, picked_means
from recdistill.core.contracts.figures import Interval
from recdistill.core.contracts.scaling import ScalingReport, ScalingRow
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.dense import DenseCandidates
from recdistill.core.data.history_value import history_value
from recdistill.core.features.encoder import Encoder
from recdistill.core.fileio import atomic_write_text
from recdistill.core.training import EncodedSplit, predict
from recdistill.demo.experiments import BatchExperiment
from recdistill.demo.stats import interval, transferability_figures
from recdistill.demo.teachers import content_key, train_or_reuse
from teacher_service import (
    SEQUENCE_SIZES,
    SequenceTeacher,
    TeacherTrainConfig,
    check_memory,
    load_checkpoint,
    resolve_device,
)

logger = logging.getLogger(__name__)
SHORT = 10  # the student's window: a teacher limited to it is the capacity-only control of its size
CONTROLS = ("label_smoothing", "self_distillation")


@dataclass(frozen=True)
class ScalingConfig:
    # The CPU grid (2 cores): 65k to 946k parameters on Instacart (15x); `GPU` spans 0.4M to over 100M.
    sizes: tuple[str, ...] = ("seq-3xs", "seq-2xs", "seq-xs", "seq-s")
    history_limits: tuple[int | None, ...] = (10, 100, 1_000, None)  # None: the whole history
    teacher_epochs: int = 6
    teacher_lr: float = 5e-3
    windows_per_batch: int = 8
    device: str = "auto"
    seeds: int = 2  # paired student seeds
    student_epochs: int = 25
    student_patience: int = 3
    student_batch_size: int = 1_024
    student_lr: float = 8e-3
    kd_weight: float = 3.0
    max_train_events: int | None = 10_000  # the students' (and so the labelled) training window
    max_holdout_events: int | None = 5_000  # the most recent N events of the valid and test windows
    teacher_holdout_events: int = 2_000  # early stopping reads the valid window before these (as the demo's)
    bootstrap_samples: int = 1_000

    def teachers(self) -> list[tuple[str, int | None]]:
        return [(size, limit) for size in self.sizes for limit in self.history_limits]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CPU = ScalingConfig()
# The large grid, for a machine with a GPU: 0.4M to over 100M parameters, every training and test event.
GPU = ScalingConfig(sizes=("seq-xs", "seq-s", "seq-m", "seq-l", "seq-xl"), teacher_epochs=20, teacher_lr=1e-3,
                    windows_per_batch=64, device="cuda", seeds=3, max_train_events=None, max_holdout_events=None)


def _ci(values: dict[str, Any] | None) -> Interval | None:
    return None if values is None else Interval(**values)


def mean_auc(runs: list[np.ndarray], test: EncodedSplit, mask: np.ndarray) -> float:
    """Seed-mean AUC of score arrays on the test window."""
    users = Users(test.user_ids)
    return round(float(np.mean([RankedScores.of(s, test.labels, mask, users).auc() for s in runs])), 6)


def auc_interval(runs: list[np.ndarray], test: EncodedSplit, mask: np.ndarray, samples: int,
                 seed: int = 0) -> tuple[float, Interval]:
    """Seed-mean AUC of score arrays on the test window, with a 95% interval resampling users and seeds
    (one user resample a draw, shared by the seeds it picks)."""
    users = Users(test.user_ids)
    ranked = [RankedScores.of(scores, test.labels, mask, users) for scores in runs]
    drawn, (picks,) = users.resamples(np.random.default_rng(seed), samples, len(ranked))
    draws = picked_means(np.stack([r.aucs(drawn) for r in ranked], axis=1), picks)
    return mean_auc(runs, test, mask), Interval(**interval(draws))


def teacher_scores(model: torch.nn.Module, dataset: PreparedDataset, split: EncodedSplit, limit: int | None,
                   negatives: int | None, device: torch.device, dense: DenseCandidates | None = None) -> np.ndarray:
    """A teacher's probabilities, in-process, on the same events and candidates as a student's split (encoded
    for the teacher: its history, up to `limit` events)."""
    encoder = Encoder(dataset.schema, "teacher", history_len=limit)
    teacher_split = EncodedSplit(task=split.task, event_ids=split.event_ids,
                                 contexts=dataset.contexts(encoder, split.event_ids, split.task, negatives, dense),
                                 labels=split.labels, user_ids=split.user_ids, encoder=encoder)

    def score(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**{k: v.to(device) for k, v in inputs.items()}).float().cpu()

    with torch.inference_mode():
        return predict(score, teacher_split, 256)[0]


def in_process_labels(experiment: BatchExperiment, model: torch.nn.Module, limit: int | None = None,
                      device: torch.device | None = None) -> tuple[BatchPhase, np.ndarray]:
    """A teacher's labels of an experiment's windows, scored in-process (an offline study): (the batch phase
    holding its labels on the training window, with its dense rows, and the valid window; its test scores)."""
    device = device or torch.device("cpu")
    data = experiment.data
    phase = BatchPhase(experiment.settings, data=data)
    phase.use_labels(teacher_scores(model, data.dataset, data.train, limit, data.train_negatives, device, data.dense),
                     teacher_scores(model, data.dataset, data.valid, limit, None, device))
    return phase, teacher_scores(model, data.dataset, experiment.test, limit, None, device)


class ScalingStudy:
    """One grid on one prepared dataset: the students' windows built once, then every teacher in turn."""

    def __init__(self, data: Path, out: Path, config: ScalingConfig, cache: Path) -> None:
        self.config, self.out, self.cache = config, out, cache
        self.dataset = PreparedDataset(data)
        settings = WorkerSettings(data=data, registry=out / "registry", state_dir=out / "state", task="slate",
                                  max_train_events=config.max_train_events,
                                  max_holdout_events=config.max_holdout_events,
                                  teacher=TeacherClientSettings(url="in-process", teacher_version="none"),
                                  distill=DistillConfig(epochs=config.student_epochs, patience=config.student_patience,
                                                        batch_size=config.student_batch_size, lr=config.student_lr,
                                                        kd_weight=config.kd_weight),
                                  gate=GateConfig(holdout_events=0))
        self.experiment = BatchExperiment(settings)
        self.data, self.test = self.experiment.data, self.experiment.test
        self.device = resolve_device(config.device)  # where teachers train and score
        self.mask = self.test.labels >= 0  # every logged candidate of a test slate is real

    def teacher(self, size: str, limit: int | None) -> tuple[dict[str, Any], bool, BatchPhase, np.ndarray, float]:
        """Train (or reuse) one teacher, label the students' windows with it in-process: (its manifest,
        cached?, the batch phase holding its labels, its test scores, seconds)."""
        started = time.perf_counter()
        config = self.config
        train = TeacherTrainConfig(task="slate", size=size, epochs=config.teacher_epochs, lr=config.teacher_lr,
                                   history_limit=limit, holdout_events=config.teacher_holdout_events,
                                   device=config.device, windows_per_batch=config.windows_per_batch)
        manifest, cached = train_or_reuse(self.dataset, train, self.cache, None)
        model, _, _ = load_checkpoint(self.cache / f"teacher-slate-{content_key(self.dataset, train)}")
        model.to(self.device).eval()
        phase, scores = in_process_labels(self.experiment, model, limit, self.device)
        return manifest, cached, phase, scores, round(time.perf_counter() - started, 1)

    def distill(self, phase: BatchPhase, label: str) -> list[np.ndarray]:
        """The same student, distilled from `phase`'s labels on every paired seed: test scores per seed."""
        soft = phase.debiased()[0]
        runs = []
        for seed in range(self.config.seeds):
            model, _ = phase.train(self.experiment.distill_config("distilled", seed), soft,
                                   self.experiment.student, label=f"{label} seed {seed}")
            with torch.no_grad():
                runs.append(predict(lambda inputs, m=model: m(**inputs), self.test)[0])
        return runs

    def check_memory(self) -> None:
        """Every size of the grid against the device's free memory, before anything trains (a size the machine
        cannot hold stops the study with an error naming it, what it needs and what is free)."""
        for size in self.config.sizes:
            model = SequenceTeacher(self.dataset.schema, SEQUENCE_SIZES[size])
            check_memory(size, model, self.config.windows_per_batch, self.device)
            del model

    def run(self) -> ScalingReport:
        started = time.perf_counter()
        config, experiment = self.config, self.experiment
        self.check_memory()
        seeds = range(config.seeds)
        baseline = [experiment.run("baseline", s).test_scores for s in seeds]
        controls = {name: [experiment.run(name, s).test_scores for s in seeds] for name in CONTROLS}
        students: dict[tuple[str, int | None], list[np.ndarray]] = {}
        teachers: dict[tuple[str, int | None], tuple[dict[str, Any], bool, np.ndarray, float]] = {}
        # Short teachers first: each longer one of its size is measured against its distilled student.
        for size, limit in sorted(config.teachers(), key=lambda cell: cell[1] != SHORT):
            logger.info("scaling: teacher %s, history %s", size, limit or "all")
            manifest, cached, phase, scores, seconds = self.teacher(size, limit)
            teachers[(size, limit)] = (manifest, cached, scores, seconds)
            students[(size, limit)] = self.distill(phase, f"scaling {size} history {limit or 'all'}")
        rows = [self._row(size, limit, teachers[(size, limit)], students, baseline, controls)
                for size, limit in config.teachers()]
        baseline_auc, baseline_ci = auc_interval(baseline, self.test, self.mask, config.bootstrap_samples)
        return ScalingReport(
            dataset=self.dataset.manifest.dataset, task="slate", config=config.to_dict(),
            test_events=len(self.test), test_users=int(np.unique(self.test.user_ids).size),
            baseline_auc=baseline_auc, baseline_auc_ci95=baseline_ci,
            controls_auc={name: mean_auc(runs, self.test, self.mask) for name, runs in controls.items()},
            rows=rows, history_value=history_value(self.dataset, "test"),
            seconds=round(time.perf_counter() - started, 1))

    def _row(self, size: str, limit: int | None, teacher: tuple[dict[str, Any], bool, np.ndarray, float],
             students: dict[tuple[str, int | None], list[np.ndarray]], baseline: list[np.ndarray],
             controls: dict[str, list[np.ndarray]]) -> ScalingRow:
        manifest, cached, scores, seconds = teacher
        samples = self.config.bootstrap_samples
        references = dict(controls)
        if limit != SHORT and (size, SHORT) in students:
            references["short_history_teacher"] = students[(size, SHORT)]
        figures = transferability_figures(self.test.labels, self.mask, self.test.user_ids, [scores], baseline,
                                          students[(size, limit)], references, samples)
        teacher_auc, teacher_ci = auc_interval([scores], self.test, self.mask, samples)
        student_auc, student_ci = auc_interval(students[(size, limit)], self.test, self.mask, samples)
        return ScalingRow(
            size=size, history_limit=limit, parameters=manifest.parameters,
            teacher_valid_auc=round(manifest.valid["auc"], 6), teacher_auc=teacher_auc,
            teacher_auc_ci95=teacher_ci, student_auc=student_auc, student_auc_ci95=student_ci,
            teacher_gain_auc=figures["teacher_gain_auc"], attributable_gain_auc=figures["attributable_gain_auc"],
            attributable_gain_auc_ci95=Interval(**figures["attributable_gain_auc_ci95"]),
            best_control=figures["best_control"], transferability=figures["transferability"],
            transferability_ci95=_ci(figures["transferability_ci95"]),
            transferability_attributable=figures["transferability_attributable"],
            transferability_attributable_ci95=_ci(figures["transferability_attributable_ci95"]),
            undefined_draws=figures["undefined_draws"], teacher_seconds=seconds, cached=cached)


def run_scaling(data: Path, out: Path, config: ScalingConfig, cache: Path) -> ScalingReport:
    """Run the grid and write `report.json`, `scaling.md` and the plots into `out`."""
    from recdistill.demo.scaling_report import plot_scaling, scaling_table

    out.mkdir(parents=True, exist_ok=True)
    report = ScalingStudy(data, out, config, cache).run()
    atomic_write_text(out / "report.json", report.to_json().decode())
    atomic_write_text(out / "scaling.md", scaling_table(report))
    plot_scaling(report, out)
    return report
