"""`recdistill study window`: how much of the teacher a student keeps against how much of each user's history
its own training data covers (its training window, counted as events per user).

One teacher (chosen from the data as the demo chooses it, trained or reused from the cache) labels every window
in-process (the student side is the worker's batch phase); at each window the baseline (hard labels, with the
user channel), the method and every control train on the same paired seeds with the same settings (no search: an
equal one), and the protocol's figures are computed on the test window with user-level intervals.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend
import msgspec  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from distill_worker import DistillConfig, GateConfig, TeacherClientSettings, WorkerSettings  # noqa: E402
from recdistill.core.contracts.figures import Interval  # noqa: E402
from recdistill.core.contracts.scaling import WindowReport, WindowRow  # noqa: E402
from recdistill.core.contracts.teacher import TeacherManifest  # noqa: E402
from recdistill.core.data.dataset import PreparedDataset  # noqa: E402
from recdistill.core.data.history_value import repeat_counter_scores  # noqa: E402
from recdistill.core.fileio import atomic_write_bytes, atomic_write_text  # noqa: E402
from recdistill.demo.config import FULL, DemoConfig, from_data  # noqa: E402
from recdistill.demo.experiments import CONTROLS, BatchExperiment  # noqa: E402
from recdistill.demo.scaling import in_process_labels  # noqa: E402
from recdistill.demo.stats import transferability_figures  # noqa: E402
from recdistill.demo.teachers import content_key, train_or_reuse  # noqa: E402
from teacher_service import TeacherTrainConfig, load_checkpoint  # noqa: E402

logger = logging.getLogger(__name__)
STUDY_CONTROLS = tuple(c for c in CONTROLS if c != "short_history_teacher")  # one teacher: no 10-event twin here


@dataclass(frozen=True)
class WindowConfig:
    windows: tuple[int | None, ...] = (5, 10, 25, 50, None)  # None: every training event
    seeds: int = 2
    bootstrap_samples: int = 2_000
    max_holdout_events: int | None = None
    # None: as the demo would choose them on this data (a smaller run: tests, a first look).
    teacher_size: str | None = None
    teacher_epochs: int | None = None
    student_epochs: int | None = None
    max_train_events: int | None = None  # at most the N most recent events of a window (a smaller run)


def _interval(values: dict[str, Any] | None) -> Interval | None:
    return None if values is None else Interval(**values)


def _row(window: int | None, experiment: BatchExperiment, teacher: np.ndarray, seeds: int, samples: int) -> WindowRow:
    test = experiment.test
    runs = {v: [experiment.run(v, s).test_scores for s in range(seeds)]
            for v in ("baseline", "distilled", *(c for c in STUDY_CONTROLS if c in experiment.controls()))}
    figures = transferability_figures(test.labels, test.labels >= 0, test.user_ids, [teacher], runs.pop("baseline"),
                                      runs.pop("distilled"), runs, samples)
    aucs = figures["aucs"]
    return WindowRow(
        window_events=window, train_events=len(experiment.data.train), baseline_auc=aucs["baseline"],
        student_auc=aucs["method"], controls_auc={k: aucs[k] for k in runs},
        teacher_gain_auc=figures["teacher_gain_auc"],
        teacher_gain_auc_ci95=Interval(**figures["teacher_gain_auc_ci95"]),
        attributable_gain_auc=figures["attributable_gain_auc"],
        attributable_gain_auc_ci95=Interval(**figures["attributable_gain_auc_ci95"]),
        best_control=figures["best_control"], transferability=figures["transferability"],
        transferability_ci95=_interval(figures["transferability_ci95"]),
        transferability_attributable=figures["transferability_attributable"],
        transferability_attributable_ci95=_interval(figures["transferability_attributable_ci95"]),
        undefined_draws=figures["undefined_draws"])


def study_teacher(dataset: PreparedDataset, cache: Path, size: str | None = None, epochs: int | None = None
                  ) -> tuple[DemoConfig, TeacherTrainConfig, TeacherManifest, torch.nn.Module]:
    """The slate teacher the demo would choose on this data (`from_data`; `size`, `epochs`: a smaller run),
    trained or reused from `cache`: (the demo's settings, the teacher's training settings, its manifest, the
    model in eval mode)."""
    demo = from_data(FULL, dataset, quick=False)
    teacher_config = TeacherTrainConfig(task="slate", size=size or demo.teacher_sizes[0],
                                        epochs=epochs or demo.teacher_epochs,
                                        batch_size=demo.teacher_batch_size, lr=demo.teacher_lr,
                                        holdout_events=demo.gate_holdout_events)
    manifest, _ = train_or_reuse(dataset, teacher_config, cache, None)
    model, _, _ = load_checkpoint(cache / f"teacher-slate-{content_key(dataset, teacher_config)}")
    model.eval()
    return demo, teacher_config, manifest, model


def run_window_study(dataset: PreparedDataset, out: Path, config: WindowConfig, cache: Path) -> WindowReport:
    started = time.perf_counter()
    demo, teacher_config, manifest, model = study_teacher(dataset, cache, config.teacher_size, config.teacher_epochs)
    distill = DistillConfig(epochs=config.student_epochs or demo.student_epochs, patience=demo.student_patience,
                            batch_size=demo.student_batch_size, lr=demo.student_lr, kd_weight=demo.kd_weight)
    rows: list[WindowRow] = []
    teacher_scores: np.ndarray | None = None
    counter_auc = float("nan")
    report: WindowReport | None = None
    for window in config.windows:
        settings = WorkerSettings(data=dataset.directory, registry=out / "registry", state_dir=out / "state",
                                  task="slate", window_events=window, max_train_events=config.max_train_events,
                                  max_holdout_events=config.max_holdout_events,
                                  teacher=TeacherClientSettings(url="in-process",
                                                                teacher_version=manifest.teacher_version),
                                  distill=distill, gate=GateConfig(holdout_events=demo.gate_holdout_events))
        experiment = BatchExperiment(settings)
        phase, scores = in_process_labels(experiment, model)
        experiment.phase = phase
        experiment.teacher_phases = [phase]
        teacher_scores = scores if teacher_scores is None else teacher_scores
        if not np.isfinite(counter_auc):
            counter = repeat_counter_scores(dataset, experiment.test.event_ids, experiment.test.labels.shape[1])
            counter_auc = experiment.metrics(counter)["auc"]
        rows.append(_row(window, experiment, teacher_scores, config.seeds, config.bootstrap_samples))
        logger.info("window %s: %s", window or "all", rows[-1])
        test = experiment.test
        summary = {"windows": ["all" if w is None else w for w in config.windows], "seeds": config.seeds,
                   "bootstrap_samples": config.bootstrap_samples, "teacher_size": teacher_config.size,
                   "student": distill.__dict__, "dense": msgspec.to_builtins(settings.dense),
                   "controls": list(STUDY_CONTROLS)}
        report = WindowReport(dataset=dataset.manifest.dataset, teacher=manifest.teacher_version,
                              teacher_auc=round(experiment.metrics(teacher_scores)["auc"], 6),
                              repeat_counter_auc=round(counter_auc, 6), config=summary, test_events=len(test),
                              test_users=int(np.unique(test.user_ids).size), rows=list(rows),
                              seconds=round(time.perf_counter() - started, 1))
        _write(report, out)  # after every window: a long window cut short leaves the ones before it written
    if report is None:
        raise ValueError("no training window to study")
    return report


def _write(report: WindowReport, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "report.json", msgspec.json.format(msgspec.json.encode(report)))
    atomic_write_text(out / "window.md", window_table(report))
    plot_window(report, out / "transfer_by_window.png")


def _ci(value: Interval | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    low = "-inf" if value.low_unbounded or value.low is None else f"{value.low:+.{digits}f}"
    high = "+inf" if value.high_unbounded or value.high is None else f"{value.high:+.{digits}f}"
    return f"[{low}, {high}]"


def window_table(report: WindowReport) -> str:
    lines = [f"Transfer against the student's training window on {report.dataset} (test: {report.test_events:,} "
             f"events, {report.test_users} users; teacher {report.teacher_auc:.4f}, repeat counter "
             f"{report.repeat_counter_auc:.4f}; {report.config['seeds']} paired seeds)", "",
             "| events per user | training events | baseline | distilled | best control | raw transferability | "
             "attributable transferability | attributable gain |",
             "| ---: | ---: | --- | --- | --- | --- | --- | --- |"]
    for r in report.rows:
        best = f"{r.best_control} {r.controls_auc.get(r.best_control or '', r.baseline_auc):.4f}"
        lines.append(f"| {r.window_events or 'all'} | {r.train_events:,} | {r.baseline_auc:.4f} | {r.student_auc:.4f} "
                     f"| {best} | {r.transferability if r.transferability is not None else '-'} "
                     f"{_ci(r.transferability_ci95)} | {r.transferability_attributable if r.transferability_attributable is not None else '-'} "  # noqa: E501
                     f"{_ci(r.transferability_attributable_ci95)} | {r.attributable_gain_auc:+.4f} "
                     f"{_ci(r.attributable_gain_auc_ci95, 4)} |")
    lines += ["", "Intervals: 95%, users resampled with the paired seeds, every draw kept; a ratio is `-` where the "
              "teacher's gain has no interval above 0."]
    return "\n".join(lines) + "\n"


def plot_window(report: WindowReport, path: Path) -> None:
    labels = [str(r.window_events or "all") for r in report.rows]
    x = np.arange(len(labels))
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for offset, (name, ci, colour) in enumerate((("transferability", "transferability_ci95", "tab:blue"),
                                                 ("transferability_attributable", "transferability_attributable_ci95",
                                                  "tab:orange"))):
        values = [getattr(r, name) if getattr(r, name) is not None else np.nan for r in report.rows]
        lows = [v - max(getattr(r, ci).low, -1.0) if getattr(r, ci) and getattr(r, ci).low is not None else 0
                for v, r in zip(values, report.rows, strict=True)]
        highs = [min(getattr(r, ci).high, 2.0) - v if getattr(r, ci) and getattr(r, ci).high is not None else 0
                 for v, r in zip(values, report.rows, strict=True)]
        axes[0].errorbar(x + 0.1 * offset, values, yerr=[np.nan_to_num(lows), np.nan_to_num(highs)], fmt="o-",
                         color=colour, capsize=3, label=name.replace("_", " "))
    axes[0].axhline(0, color="grey", lw=0.5)
    axes[0].set(xticks=x, xticklabels=labels, xlabel="student training window (events per user)",
                ylabel="transferability", title="transfer against the student's own data")
    axes[0].legend()
    axes[1].plot(x, [r.baseline_auc for r in report.rows], "o-", label="baseline (hard labels)")
    axes[1].plot(x, [r.student_auc for r in report.rows], "o-", label="distilled")
    axes[1].axhline(report.teacher_auc, color="black", ls="--", label="teacher")
    axes[1].axhline(report.repeat_counter_auc, color="grey", ls=":", label="repeat counter")
    axes[1].set(xticks=x, xticklabels=labels, xlabel="student training window (events per user)", ylabel="test AUC")
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
