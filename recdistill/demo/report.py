"""The demo's report: report.json (every figure), report.md (tables), PNG plots, a terminal summary."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from recdistill.core.contracts.demo import DemoDataset, DemoReport
from recdistill.core.contracts.figures import TaskFigures
from recdistill.core.contracts.teacher import TeacherManifest
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.history_value import history_value, repeat_counter_scores
from recdistill.demo.config import DemoConfig
from recdistill.demo.experiments import CHANNELS, CONTROLS, VARIANTS, BatchExperiment
from recdistill.demo.live import LiveResult
from recdistill.demo.online import ExplorationSet
from recdistill.demo.plots import plot_auc_per_version, plot_calibration, plot_latency
from recdistill.demo.report_md import METRICS, print_summary, render_markdown
from recdistill.demo.report_scenarios import scenario_figures
from recdistill.demo.report_serving import serving_summary
from recdistill.demo.stats import auc_difference, by_history_length, std, transferability_figures
from recdistill.demo.streaming import STREAM_VARIANTS


@dataclass
class StreamRun:
    seed: int
    test: dict[str, float]
    scores: np.ndarray  # on the test window
    exploration_scores: np.ndarray | None = None  # on the live exploration slice
    exploration_auc: float | None = None  # click AUC there


@dataclass
class TaskResults:
    task: str
    teacher_manifest: TeacherManifest
    teacher_reused: bool
    experiment: BatchExperiment | None = None
    live: LiveResult | None = None
    live_versions: list[dict[str, Any]] = field(default_factory=list)
    stream_runs: dict[tuple[str, int], StreamRun] = field(default_factory=dict)
    teacher_seed_manifests: list[TeacherManifest] = field(default_factory=list)  # seed 0 first
    short_teacher_manifest: TeacherManifest | None = None  # the short-history teacher control's
    short_teacher_test: dict[str, float] | None = None
    short_teacher_scores: np.ndarray | None = None  # its test scores, for the history's paired gain
    exploration: ExplorationSet | None = None  # the live replay's exploration slice
    teacher_selection: list[dict[str, Any]] = field(default_factory=list)  # candidates by valid AUC
    counterfactual: dict[str, Any] | None = None  # the A/B question asked of every request (`counterfactual_ab`)
    scenarios: dict[str, BatchExperiment] = field(default_factory=dict)  # the task's other scenarios' students


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _mean_metrics(runs: list[Any]) -> dict[str, Any]:
    """Seed means and sample standard deviations (ddof=1; None with one seed) of runs' test metrics, and
    the seeds they ran on (every variant runs on the method's)."""
    rows = [r.test for r in runs]
    keys = [k for k in METRICS if k in rows[0]]
    out: dict[str, Any] = {k: round(float(np.mean([r[k] for r in rows])), 6) for k in keys}
    out |= {f"{k}_std": _round(std([r[k] for r in rows]), 6) for k in keys}
    return out | {"seeds": [r.seed for r in runs]}


def _variant_rows(result: TaskResults, names: list[str], teacher_auc: float, defined: bool) -> list[dict[str, Any]]:
    """One row per variant: AUC over its seeds, and (where the teacher's gain is defined) transferability
    against the same-seed baseline."""
    experiment = result.experiment
    assert experiment is not None
    full = {s: r.test["auc"] for (v, s), r in experiment.runs.items() if v == "distilled"}
    rows = []
    for name in names:
        runs = sorted((r for (v, _), r in experiment.runs.items() if v == name), key=lambda r: r.seed)
        if not runs:
            continue
        ratios = [(r.test["auc"] - base) / (teacher_auc - base) for r in runs
                  for base in [experiment.runs[("baseline", r.seed)].test["auc"]]] if defined else []
        rows.append({"name": name, "description": VARIANTS[name], **_mean_metrics(runs),
                     "transferability": _round(float(np.mean(ratios)), 4) if ratios else None,
                     "transferability_std": _round(std(ratios), 4),
                     "auc_minus_full_method": round(float(np.mean([r.test["auc"] - full[r.seed] for r in runs])), 6)})
    return rows


def _stream_runs(result: TaskResults, variant: str) -> list[StreamRun]:
    """A stream variant's reruns, in seed order."""
    return [run for (v, _), run in sorted(result.stream_runs.items()) if v == variant]


def _stream_rows(result: TaskResults) -> list[dict[str, Any]]:
    rows = []
    for name, description in STREAM_VARIANTS.items():
        runs = _stream_runs(result, name)
        if runs:
            on_slice = [r.exploration_auc for r in runs if r.exploration_auc is not None]
            rows.append({"name": name, "description": description, **_mean_metrics(runs),
                         "exploration_click_auc": round(float(np.mean(on_slice)), 4) if on_slice else None})
    return rows


def _debiasing(result: TaskResults, samples: int) -> dict[str, Any]:
    """Each debiasing ablation against the full stream, paired by seed, on the two evaluations the replay has:
    the test window (true next items) and the exploration slice's clicks (what a production team has)."""
    experiment, explored = result.experiment, result.exploration
    assert experiment is not None
    test = experiment.test
    out: dict[str, Any] = {"design": DEBIASING_DESIGN,
                           "exploration_slice": None if explored is None else {
                               "requests": len(explored.split), "clicks": explored.clicks,
                               "exposed_candidates": int(explored.exposed.sum())}}
    full = _stream_runs(result, "stream")
    for variant in ("stream_no_ipw", "stream_no_position_tower", "batch_only"):
        ablated = _stream_runs(result, variant)
        if not ablated or len(ablated) != len(full):
            continue
        row: dict[str, Any] = {"test_auc_minus_stream": auc_difference(
            test.labels, test.labels >= 0, test.user_ids, [r.scores for r in ablated],
            [r.scores for r in full], samples)}
        on_slice = [r.exploration_scores for r in ablated], [r.exploration_scores for r in full]
        if explored is not None and explored.clicks and all(s is not None for s in on_slice[0] + on_slice[1]):
            row["exploration_click_auc_minus_stream"] = auc_difference(
                explored.split.labels, explored.exposed, explored.split.user_ids, *on_slice, samples)
        out[variant] = row
    return out


DEBIASING_DESIGN = (
    "The replay's logging policy has biases the student cannot see: users after a niche item come from the "
    "'search' source, sampled at a lower rate (a hidden variable: no model reads the source, no request names "
    "the next item), and clicks follow a position-based model (examination 1/log2(p + 2) in the top 10). A "
    "slice of traffic is served in a random order and kept out of training: there position is independent of "
    "the item, so its clicks rank models without the position bias. Each ablation is compared with the full "
    "stream, paired by seed, on that slice and on the test window; a difference whose interval holds 0 is noise.")
PROTOCOL = ("Every choice is made on the valid window: early stopping, calibration, and a search (seed 0) over "
            "the regulariser for the baseline, the method and every control, plus the teacher-term weight for "
            "those with a teacher term; ablations reuse the method's choice. The gate's holdout is the end of the "
            "valid window, used by nothing else. The test window is scored once per kept model, after training; "
            "no choice reads it.")


TRANSFERABILITY_NOTE = (
    "raw: (distilled - baseline) / (teacher - baseline); teacher-attributable: (distilled - best of the "
    "baseline and the controls) / (teacher - baseline); both on seed-mean test AUCs, every variant on the "
    "same seeds. A ratio is defined when the teacher gain's interval lies above 0. Intervals: 95% "
    "bootstrap, every draw kept, over users (all events of a drawn user), the seed pairs (one draw of "
    "seeds for every variant) and the teacher seeds; a draw whose teacher gain is at or below 0 counts "
    "as an unbounded ratio (`undefined_draws`). Standard deviations over seeds with ddof=1")


def summarize_task(result: TaskResults, config: DemoConfig) -> dict[str, Any]:
    experiment = result.experiment
    if experiment is None or experiment.teacher_test_scores is None:
        raise RuntimeError(f"task {result.task}: no experiment ran")
    teacher = experiment.teacher_test_metrics()
    seeds = sorted(s for v, s in experiment.runs if v == "distilled")
    baselines = [experiment.runs[("baseline", s)] for s in seeds]
    students = [experiment.runs[("distilled", s)] for s in seeds]
    # A control counts only on the method's seeds, paired: its seed s against the method's seed s.
    control_runs = {name: [experiment.runs[(name, s)] for s in seeds] for name in CONTROLS
                    if all((name, s) in experiment.runs for s in seeds)}
    test = experiment.test
    mask = test.labels >= 0  # the real candidates of padded slates, as in the point metrics
    scores = {"teachers": experiment.teacher_seed_scores, "baseline": [b.test_scores for b in baselines],
              "method": [d.test_scores for d in students],
              "controls": {name: [r.test_scores for r in runs] for name, runs in control_runs.items()}}
    figures = transferability_figures(test.labels, mask, test.user_ids, **scores, samples=config.bootstrap_samples)
    history = experiment.data.dataset.events["hist_len"].to_numpy()[test.event_ids]
    buckets = by_history_length(history, test.labels, mask, test.user_ids, **scores,
                                samples=config.bootstrap_samples)
    defined = figures["ratio_defined"]
    base_auc = float(np.mean([b.test["auc"] for b in baselines]))
    per_seed = [(d.test["auc"] - b.test["auc"]) / (teacher["auc"] - b.test["auc"])
                for b, d in zip(baselines, students, strict=True)] if defined else []
    summary: dict[str, Any] = {
        "teacher": _teacher_summary(result, teacher),
        "student_parameters": sum(p.numel() for p in baselines[0].model.parameters()),
        "student_baseline": _mean_metrics(baselines) | {"per_seed": [b.summary() for b in baselines]},
        "student_distilled": _mean_metrics(students) | {"per_seed": [d.summary() for d in students]},
        "teacher_gain_auc": round(teacher["auc"] - base_auc, 6),
        **{key: figures[key] for key in (
            "teacher_gain_auc_ci95", "gain_auc", "gain_auc_ci95", "attributable_gain_auc",
            "attributable_gain_auc_ci95", "ratio_defined", "transferability", "transferability_ci95",
            "transferability_attributable", "transferability_attributable_ci95", "best_control", "undefined_draws",
            "bootstrap_resamples")},
        "transferability_std": _round(std(per_seed), 4),
        "transferability_per_seed": [_round(r, 4) for r in per_seed],
        "by_history_length": buckets,
        # The history's value before any training: a repeat scorer reading the last N events (see its module).
        "history_value": history_value(experiment.data.dataset, "test") if result.task == "slate" else None,
        "transferability_note": TRANSFERABILITY_NOTE,
        "teacher_calibration": msgspec.to_builtins(experiment.debias_report.get("distilled")),
        "test_events": len(test),
        "test_users": int(np.unique(test.user_ids).size),
        "teacher_seeds": len(experiment.teacher_seed_scores),
        "tuning": {variant: t.summary() for variant, t in experiment.tuning.items()},
        "protocol": PROTOCOL,
    }
    if result.short_teacher_scores is not None:
        # What the long history gives the teacher: the same model reading only the student's window, on the
        # same events (teacher seeds paired with the short-history teacher), users resampled.
        gain = auc_difference(test.labels, mask, test.user_ids, experiment.teacher_seed_scores,
                              [result.short_teacher_scores] * len(experiment.teacher_seed_scores),
                              config.bootstrap_samples)
        summary["teacher_history_gain_auc"] = gain["difference"]
        summary["teacher_history_gain_auc_ci95"] = {"low": gain["low"], "high": gain["high"]}
    if result.short_teacher_test is not None and result.short_teacher_manifest is not None:
        summary["short_history_teacher"] = result.short_teacher_test | {
            "version": result.short_teacher_manifest.teacher_version,
            "history_events": result.short_teacher_manifest.history_limit}
    summary["ablations"] = _variant_rows(result, ["plain_kd", "no_calibration", "no_unexposed_labels"],
                                         teacher["auc"], defined)
    summary["controls"] = _variant_rows(result, list(CONTROLS), teacher["auc"], defined)
    summary["channels"] = [row | {"channel": CHANNELS[row["name"]]} for row in summary["controls"]
                           if row["name"] in CHANNELS]
    summary["student_window_events"] = experiment.settings.window_events or "all"
    if result.task == "slate":
        summary |= _references(experiment, baselines, config.bootstrap_samples)
    if result.stream_runs:
        summary |= _stream_summary(result, config)
        summary["ablations"] += [row | {"phase": "stream"} for row in summary["stream"]
                                 if row["name"] in ("batch_only", "stream_no_ipw", "stream_no_position_tower")]
    return summary


def _references(experiment: BatchExperiment, baselines: list[Any], samples: int) -> dict[str, Any]:
    """The no-teacher references on the test slates (the repeat counter over the whole history, the best student
    trained on hard labels alone: the tuned baseline) and the teacher's margin over each and over the better one,
    with user-level intervals (teacher seed s % T paired with reference seed s)."""
    test = experiment.test
    mask = test.labels >= 0
    teachers = experiment.teacher_seed_scores
    counter = repeat_counter_scores(experiment.data.dataset, test.event_ids, test.labels.shape[1])
    runs = {"repeat_counter": [counter], "hard_label_student": [b.test_scores for b in baselines]}
    rows = []
    for name, scores in runs.items():
        paired = [teachers[i % len(teachers)] for i in range(max(len(scores), len(teachers)))]
        reference = [scores[i % len(scores)] for i in range(len(paired))]
        margin = auc_difference(test.labels, mask, test.user_ids, paired, reference, samples)
        rows.append({"name": name, "auc": round(float(np.mean([experiment.metrics(s)["auc"] for s in scores])), 6),
                     "teacher_margin_auc": margin["difference"],
                     "teacher_margin_auc_ci95": {"low": margin["low"], "high": margin["high"]}})
    best = max(rows, key=lambda row: row["auc"])
    return {"references": rows, "teacher_margin_over_best_reference": {
        "reference": best["name"], "auc": best["teacher_margin_auc"], "ci95": best["teacher_margin_auc_ci95"],
        "goal": 0.02, "met": best["teacher_margin_auc_ci95"]["low"] > 0 and best["teacher_margin_auc"] >= 0.02}}


def _teacher_summary(result: TaskResults, teacher: dict[str, float]) -> dict[str, Any]:
    experiment, manifest = result.experiment, result.teacher_manifest
    assert experiment is not None
    return {k: round(v, 6) for k, v in teacher.items()} | {
        "auc_std": _round(std([experiment.metrics(s)["auc"] for s in experiment.teacher_seed_scores]), 6),
        "version": manifest.teacher_version, "parameters": manifest.parameters,
        "history_events": manifest.history_limit or "all (up to 20,000)",
        "reused": result.teacher_reused,
        "selection_on_valid": result.teacher_selection,
        "train_seconds": manifest.seconds,
        # each seed's score stack (the sequence family's, fitted on valid; None for the other family)
        "per_seed": [{"version": m.teacher_version, "test_auc": round(experiment.metrics(s)["auc"], 6),
                      "score_stack": msgspec.to_builtins(m.stack)}
                     for m, s in zip(result.teacher_seed_manifests, experiment.teacher_seed_scores, strict=True)]}


def _stream_summary(result: TaskResults, config: DemoConfig) -> dict[str, Any]:
    """Batch only vs batch + stream, the debiasing ablations, and the versions served during the replay."""
    assert result.experiment is not None
    batch = next((v for v in result.live_versions if v["phase"] == "batch"), None)
    tolerance = result.experiment.settings.gate.auc_tolerance
    return {
        "stream": _stream_rows(result),
        "debiasing_evaluation": _debiasing(result, config.bootstrap_samples),
        "promoted_versions": result.live_versions,
        # The gate holds every candidate to the batch version (its anchor) on the gate's holdout, within the
        # margin sized to it; the same on test:
        "promoted_below_batch_by_more_than_margin": None if batch is None else [
            v["version"] for v in result.live_versions if v["phase"] == "stream" and v["test"]["auc"]
            < batch["test"]["auc"] - v["gate"].get("anchor", {}).get("margin", tolerance)]}


def _finite(value: Any, path: str = "") -> list[str]:
    """Paths of non-finite floats (a report must not carry NaN or inf)."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _finite(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _finite(v, f"{path}[{i}]")]
    return []


# The headline task's figures that the report repeats at its top.
HEADLINE = ("teacher", "student_baseline", "student_distilled", "transferability", "transferability_std",
            "transferability_ci95", "transferability_attributable", "transferability_attributable_ci95",
            "best_control", "ablations", "controls")


def write_report(out: Path, dataset: PreparedDataset, config: DemoConfig, results: dict[str, TaskResults],
                 timings: dict[str, float], seconds: float) -> DemoReport:
    tasks = {task: summarize_task(result, config) for task, result in results.items()}
    # Every task's figures checked into their types (a key a type does not know is refused, not dropped).
    typed = msgspec.convert(tasks, dict[str, TaskFigures])
    headline_task = "slate" if "slate" in typed else next(iter(typed))
    headline = typed[headline_task]
    live = results["slate"].live if "slate" in results else None
    manifest = dataset.manifest
    report = DemoReport(
        dataset=DemoDataset(name=manifest.dataset, stats=manifest.stats, split=manifest.split.counts),
        headline_task=headline_task,  # type: ignore[arg-type]
        **{name: getattr(headline, name) for name in HEADLINE},
        serving=serving_summary(live, config.exposed_positions, config.bootstrap_samples,
                         results["slate"].counterfactual) if live else None,
        tasks=typed, scenarios=scenario_figures(dataset, config, results, tasks, summarize_task),
        config=config.to_dict(),
        stage_seconds=timings, total_seconds=round(seconds, 1),
        artifacts={"registry": "registry/", "teacher": "teacher/", "sample_log": "samples/", "logs": "logs/"},
        plots=_plots(out, results, live))
    report = msgspec.structs.replace(report, non_finite=_finite(msgspec.to_builtins(report)))
    (out / "report.json").write_bytes(report.to_json())
    people = msgspec.to_builtins(report)
    (out / "report.md").write_text(render_markdown(people))
    print_summary(people)
    return report


def _plots(out: Path, results: dict[str, TaskResults], live: LiveResult | None) -> list[str]:
    written = [plot_calibration(out / "calibration.png", {task: r.experiment for task, r in results.items()
                                                          if r.experiment})]
    if live and "slate" in results:
        slate = results["slate"]
        assert slate.experiment is not None
        baseline_auc = float(np.mean([r.test["auc"] for (v, _), r in slate.experiment.runs.items()
                                      if v == "baseline"]))
        written.append(plot_auc_per_version(out / "auc_per_version.png", slate.live_versions,
                                            slate.experiment.teacher_test_metrics()["auc"], baseline_auc))
        written.append(plot_latency(out / "latency.png", live))
    return [p.name for p in written]


