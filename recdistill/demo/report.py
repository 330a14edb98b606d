"""The demo's report: report.json (every figure), report.md (tables), PNG plots, a terminal summary."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from recdistill.core.data.dataset import PreparedDataset
from recdistill.demo.config import DemoConfig
from recdistill.demo.experiments import VARIANTS, BatchExperiment
from recdistill.demo.live import LiveResult
from recdistill.demo.online import ExplorationSet, online_ab
from recdistill.demo.plots import plot_auc_per_version, plot_calibration, plot_latency
from recdistill.demo.stats import auc_difference, bootstrap_transferability, ratios, std, transferability
from recdistill.demo.streaming import STREAM_VARIANTS

METRICS = ("auc", "gauc", "log_loss", "ece", "ndcg@10")


@dataclass
class StreamRun:
    test: dict[str, float]
    scores: np.ndarray  # on the test window
    exploration_scores: np.ndarray | None = None  # on the live exploration slice
    exploration_auc: float | None = None  # click AUC there


@dataclass
class TaskResults:
    task: str
    teacher_manifest: dict[str, Any]
    teacher_reused: bool
    experiment: BatchExperiment | None = None
    live: LiveResult | None = None
    live_versions: list[dict[str, Any]] = field(default_factory=list)
    stream_runs: dict[tuple[str, int], StreamRun] = field(default_factory=dict)
    teacher_seed_manifests: list[dict[str, Any]] = field(default_factory=list)  # seed 0 first
    short_teacher_manifest: dict[str, Any] | None = None  # the short-history teacher control's
    short_teacher_test: dict[str, float] | None = None
    exploration: ExplorationSet | None = None  # the live replay's exploration slice


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _mean_metrics(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Seed means and sample standard deviations (ddof=1; None with one seed)."""
    keys = [k for k in METRICS if k in rows[0]]
    out: dict[str, Any] = {k: round(float(np.mean([r[k] for r in rows])), 6) for k in keys}
    out |= {f"{k}_std": _round(std([r[k] for r in rows]), 6) for k in keys}
    return out | {"seeds": len(rows)}


def _ratios(teacher_auc: float, pairs: list[tuple[float, float]], min_gain: float) -> list[float | None]:
    return [transferability(teacher_auc, base, student, min_gain) for base, student in pairs]


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    defined = [v for v in values if v is not None]
    if not defined:
        return None, None
    return round(float(np.mean(defined)), 4), _round(std(defined), 4)


def _variant_rows(result: TaskResults, names: list[str], teacher_auc: float, config: DemoConfig
                  ) -> list[dict[str, Any]]:
    """One row per variant: AUC over its seeds and transferability against the same-seed baseline."""
    experiment = result.experiment
    assert experiment is not None
    full = {s: r.test["auc"] for (v, s), r in experiment.runs.items() if v == "distilled"}
    rows = []
    for name in names:
        runs = sorted((r for (v, _), r in experiment.runs.items() if v == name), key=lambda r: r.seed)
        if not runs:
            continue
        pairs = [(experiment.runs[("baseline", r.seed)].test["auc"], r.test["auc"]) for r in runs]
        ratio, ratio_std = _mean_std(_ratios(teacher_auc, pairs, config.min_teacher_gain))
        rows.append({"name": name, "description": VARIANTS[name], **_mean_metrics([r.test for r in runs]),
                     "transferability": ratio, "transferability_std": ratio_std,
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
            rows.append({"name": name, "description": description, **_mean_metrics([r.test for r in runs]),
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
            test.labels, np.ones(test.labels.shape, dtype=bool), test.user_ids, [r.scores for r in ablated],
            [r.scores for r in full], samples)}
        on_slice = [r.exploration_scores for r in ablated], [r.exploration_scores for r in full]
        if explored is not None and explored.clicks and all(s is not None for s in on_slice[0] + on_slice[1]):
            row["exploration_click_auc_minus_stream"] = auc_difference(
                explored.split.labels, explored.exposed, explored.split.user_ids, *on_slice, samples)
        out[variant] = row
    return out


MAX_ERROR_SHARE = 0.01


def _serving(live: LiveResult, exposed_positions: int, samples: int) -> dict[str, Any]:
    latencies = np.array([s.latency_ms for s in live.served if s.error is None])
    per_protocol = {}
    for protocol in ("http", "grpc"):
        values = np.array([s.latency_ms for s in live.served if s.protocol == protocol and s.error is None])
        if values.size:
            per_protocol[protocol] = {"requests": int(values.size),
                                      "p50_ms": round(float(np.percentile(values, 50)), 2),
                                      "p99_ms": round(float(np.percentile(values, 99)), 2)}
    errors = [s.error for s in live.served if s.error is not None]
    first_error = errors[0] if errors else None
    online: dict[str, dict[str, float | int]] = {}  # what each served version did for the replayed users
    for version in sorted({s.version for s in live.served if s.version}):
        mine = [s for s in live.served if s.version == version]
        online[version] = {"requests": len(mine),
                            "real_item_in_top10": round(float(np.mean([s.real_item_rank is not None and
                                                                       s.real_item_rank < 10 for s in mine])), 4),
                            "click_rate": round(float(np.mean([s.clicked for s in mine])), 4)}
    return {
        "requests": len(live.served), "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        # More than MAX_ERROR_SHARE of the replay failing makes the run a failure: `recdistill demo` exits 1.
        "failed": len(errors) > MAX_ERROR_SHARE * max(1, len(live.served)),
        "first_error": first_error, "first_error_count": errors.count(first_error) if errors else 0,
        "p50_ms": round(float(np.percentile(latencies, 50)), 2) if latencies.size else None,
        "p99_ms": round(float(np.percentile(latencies, 99)), 2) if latencies.size else None,
        "per_protocol": per_protocol,
        "duration_s": live.duration_s,
        "swaps": len(live.swaps) - 1,  # the first entry is the baseline serving from the start
        "refused_by_gate": live.refused,
        "clicks": sum(s.clicked for s in live.served),
        "online_by_version": online,
        "online_by_version_note": ONLINE_NOTE,
        "online_ab": online_ab(live, exposed_positions, samples),
        "feedback_errors": live.feedback_errors,
        "stream": live.stream_state,
    }


CONTROLS = ("self_distillation", "label_smoothing", "short_history_teacher")
DEBIASING_DESIGN = (
    "The replay's logging policy has biases the student cannot see: users after a niche item come from the "
    "'search' source, sampled at a lower rate (a hidden variable: no model reads the source, no request names "
    "the next item), and clicks follow a position-based model (examination 1/log2(p + 2) in the top 10). A "
    "slice of traffic is served in a random order and kept out of training: there position is independent of "
    "the item, so its clicks rank models without the position bias. Each ablation is compared with the full "
    "stream, paired by seed, on that slice and on the test window; a difference whose interval holds 0 is noise.")
ONLINE_NOTE = ("per served version over the stretch of the replay it served: different stretches of time, "
               "not an A/B; the A/B test is `online_ab`")
PROTOCOL = ("Every choice is made on the valid window: early stopping, calibration, and a search (seed 0) over "
            "the regulariser for the baseline, the method and every control, plus the teacher-term weight for "
            "those with a teacher term; ablations reuse the method's choice. The gate's holdout is the end of the "
            "valid window, used by nothing else. The test window is scored once per kept model, after training; "
            "no choice reads it.")


def summarize_task(result: TaskResults, config: DemoConfig) -> dict[str, Any]:
    experiment = result.experiment
    if experiment is None or experiment.teacher_test_scores is None:
        raise RuntimeError(f"task {result.task}: no experiment ran")
    teacher = experiment.teacher_test_metrics()
    seeds = sorted(s for v, s in experiment.runs if v == "distilled")
    baselines = [experiment.runs[("baseline", s)] for s in seeds]
    students = [experiment.runs[("distilled", s)] for s in seeds]
    per_seed = _ratios(teacher["auc"], [(b.test["auc"], d.test["auc"]) for b, d in zip(baselines, students,
                                                                                           strict=True)],
                       config.min_teacher_gain)
    _, ratio_std = _mean_std(per_seed)
    control_runs = {name: sorted((r for (v, _), r in experiment.runs.items() if v == name), key=lambda r: r.seed)
                    for name in CONTROLS}
    control_runs = {name: runs for name, runs in control_runs.items() if runs}
    control_aucs = {name: float(np.mean([r.test["auc"] for r in runs])) for name, runs in control_runs.items()}
    base_auc = float(np.mean([b.test["auc"] for b in baselines]))
    raw, attributable = ratios(teacher["auc"], base_auc, float(np.mean([d.test["auc"] for d in students])),
                               control_aucs, config.min_teacher_gain)
    if not control_runs:
        attributable = None  # no control ran: nothing to attribute against
    test = experiment.test
    # No interval around a ratio that is undefined (a teacher gain under the noise floor).
    intervals = None if raw is None else bootstrap_transferability(
        test.labels, np.ones(test.labels.shape, dtype=bool), test.user_ids, experiment.teacher_seed_scores,
        [b.test_scores for b in baselines], [d.test_scores for d in students],
        {name: [r.test_scores for r in runs] for name, runs in control_runs.items()},
        config.bootstrap_samples, config.min_teacher_gain)
    manifest = result.teacher_manifest
    summary: dict[str, Any] = {
        "teacher": {k: round(v, 6) for k, v in teacher.items()} | {
            "auc_std": _round(std([experiment.metrics(s)["auc"] for s in experiment.teacher_seed_scores]), 6),
            "version": manifest["teacher_version"], "parameters": manifest["parameters"],
            "history_events": "all (up to 20,000)", "reused": result.teacher_reused,
            "train_seconds": manifest["seconds"],
            "per_seed": [{"version": m["teacher_version"], "test_auc": round(experiment.metrics(s)["auc"], 6)}
                         for m, s in zip(result.teacher_seed_manifests, experiment.teacher_seed_scores, strict=True)]},
        "student_parameters": sum(p.numel() for p in baselines[0].model.parameters()),
        "student_baseline": _mean_metrics([b.test for b in baselines]) | {"per_seed": [b.summary() for b in baselines]},
        "student_distilled": _mean_metrics([d.test for d in students]) | {"per_seed": [d.summary() for d in students]},
        "teacher_gain_auc": round(teacher["auc"] - base_auc, 6),
        "transferability": _round(raw, 4),
        "transferability_std": ratio_std,
        "transferability_per_seed": [_round(r, 4) for r in per_seed],
        "transferability_ci95": None if intervals is None else intervals["raw"],
        "transferability_attributable": _round(attributable, 4),
        "transferability_attributable_ci95": None if intervals is None or attributable is None
        else intervals["attributable"],
        "best_control": max(control_aucs, key=control_aucs.__getitem__) if control_aucs else None,
        "transferability_note": (
            "raw: (distilled - baseline) / (teacher - baseline); teacher-attributable: (distilled - best "
            "control) / (teacher - baseline), the best control being the one with the highest AUC; both on "
            f"seed-mean test AUCs, undefined when the teacher's gain is below {config.min_teacher_gain}. "
            "Intervals: 95% bootstrap over users (all events of a drawn user), paired seeds and teacher seeds; "
            "standard deviations over seeds with ddof=1"),
        "teacher_calibration": experiment.debias_report.get("distilled", {}).get("calibration"),
        "test_events": len(test),
        "test_users": int(np.unique(test.user_ids).size),
        "teacher_seeds": len(experiment.teacher_seed_scores),
        "tuning": {variant: t.summary() for variant, t in experiment.tuning.items()},
        "protocol": PROTOCOL,
    }
    if result.short_teacher_test is not None and result.short_teacher_manifest is not None:
        summary["short_history_teacher"] = result.short_teacher_test | {
            "version": result.short_teacher_manifest["teacher_version"],
            "history_events": result.short_teacher_manifest["config"]["history_limit"]}
    summary["ablations"] = _variant_rows(result, ["plain_kd", "no_calibration", "no_unexposed_labels"],
                                         teacher["auc"], config)
    summary["controls"] = _variant_rows(result, list(CONTROLS), teacher["auc"], config)
    if result.stream_runs:
        summary["stream"] = _stream_rows(result)
        summary["debiasing_evaluation"] = _debiasing(result, config.bootstrap_samples)
        summary["ablations"] += [row | {"phase": "stream"} for row in summary["stream"]
                                 if row["name"] in ("batch_only", "stream_no_ipw", "stream_no_position_tower")]
        summary["promoted_versions"] = result.live_versions
    return summary


def _finite(value: Any, path: str = "") -> list[str]:
    """Paths of non-finite floats (a report must not carry NaN or inf)."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _finite(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _finite(v, f"{path}[{i}]")]
    return []


def write_report(out: Path, dataset: PreparedDataset, config: DemoConfig, results: dict[str, TaskResults],
                 timings: dict[str, float], seconds: float) -> dict[str, Any]:
    tasks = {task: summarize_task(result, config) for task, result in results.items()}
    headline = tasks.get("slate") or next(iter(tasks.values()))
    live = results["slate"].live if "slate" in results else None
    report: dict[str, Any] = {
        "dataset": {"name": dataset.manifest["dataset"], "stats": dataset.manifest["stats"],
                    "split": dataset.manifest["split"]["counts"]},
        "headline_task": "slate" if "slate" in tasks else next(iter(tasks)),
        **{k: headline[k] for k in ("teacher", "student_baseline", "student_distilled", "transferability",
                                    "transferability_std", "transferability_ci95", "transferability_attributable",
                                    "transferability_attributable_ci95", "best_control")},
        "ablations": headline.get("ablations", []),
        "controls": headline.get("controls", []),
        "serving": _serving(live, config.exposed_positions, config.bootstrap_samples) if live else None,
        "tasks": tasks,
        "config": config.to_dict(),
        "stage_seconds": timings,
        "total_seconds": round(seconds, 1),
        "artifacts": {"registry": "registry/", "teacher": "teacher/", "sample_log": "samples/", "logs": "logs/"},
    }
    report["plots"] = _plots(out, results, live)
    bad = _finite(report)
    if bad:
        report["non_finite"] = bad
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(render_markdown(report))
    print_summary(report)
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


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _metric_row(name: str, metrics: dict[str, Any], keys: tuple[str, ...]) -> str:
    cells = []
    for key in keys:
        value = metrics.get(key)
        std = metrics.get(f"{key}_std")
        cells.append(_fmt(value) + (f" ± {std:.4f}" if std else ""))
    return f"| {name} | " + " | ".join(cells) + " |"


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# Rec-Distill demo report", "",
             f"Dataset: {report['dataset']['name']} ({report['dataset']['stats']['interactions']:,} interactions; "
             "train / valid / test events " + " / ".join(f"{n:,}" for n in report['dataset']['split'].values())
             + f"). Total {report['total_seconds']} s.", ""]
    for task, summary in report["tasks"].items():
        keys = tuple(k for k in METRICS if k in summary["teacher"])
        lines += [f"## Task `{task}`{' (headline: the serving scenario)' if task == report['headline_task'] else ''}",
                  "", "| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|",
                  _metric_row(f"teacher ({summary['teacher']['parameters']:,} params, full history)",
                              summary["teacher"], keys),
                  *([_metric_row("short-history teacher (same size, last "
                                 f"{summary['short_history_teacher']['history_events']} events; a control)",
                                 summary["short_history_teacher"], keys)]
                    if summary.get("short_history_teacher") else []),
                  _metric_row(f"baseline student ({summary['student_parameters']:,} params, last 10 events, "
                              f"{summary['student_baseline']['seeds']} seeds)",
                              summary["student_baseline"], keys),
                  _metric_row(f"distilled student ({summary['student_distilled']['seeds']} seeds)",
                              summary["student_distilled"], keys), ""]
        ci = summary["transferability_ci95"]
        if ci is None:
            lines += [f"Teacher gain over the baseline: {_fmt(summary['teacher_gain_auc'])} test AUC, under the "
                      f"noise floor of {report['config']['min_teacher_gain']}: **transferability undefined** (no "
                      "ratio and no interval are reported).", ""]
        else:
            attributable, aci = summary["transferability_attributable"], summary["transferability_attributable_ci95"]
            lines += [f"Teacher gain over the baseline: {_fmt(summary['teacher_gain_auc'])} test AUC "
                      f"({summary['test_events']:,} test events from {summary['test_users']} users, "
                      f"{summary['teacher_seeds']} teacher seed(s); student seed s learns from teacher seed s "
                      "mod their number)."]
            if attributable is not None and aci is not None:
                lines += [f"**Teacher-attributable transferability {_fmt(attributable, 3)}** [95% "
                          f"{_fmt(aci['low'], 3)}, {_fmt(aci['high'], 3)}]: the share of the teacher's gain the "
                          f"distilled student recovers beyond the best control ({summary['best_control']})."]
            else:
                lines += ["Teacher-attributable transferability: not measured for this task (no control ran)."]
            lines += [f"Raw transferability {_fmt(summary['transferability'], 3)} [95% {_fmt(ci['low'], 3)}, "
                      f"{_fmt(ci['high'], 3)}] (per seed {summary['transferability_per_seed']}, std "
                      f"{_fmt(summary['transferability_std'], 3)}). Both on seed-mean test AUCs; intervals from "
                      f"{ci['samples']} bootstrap resamples of users (all events of a drawn user) and seeds.", ""]
        for title, rows in (("Ablations", summary.get("ablations")), ("Controls", summary.get("controls"))):
            if not rows:
                continue
            lines += [f"### {title}", "", "| variant | test AUC | AUC - full method | transferability | what |",
                      "|---|---|---|---|---|"]
            for row in rows:
                lines.append(f"| {row['name']} | {_fmt(row['auc'])} ± {_fmt(row['auc_std'])} ({row['seeds']} seeds) | "
                             f"{_fmt(row.get('auc_minus_full_method'))} | {_fmt(row.get('transferability'), 3)} | "
                             f"{row['description']} |")
            lines.append("")
        if summary.get("tuning"):
            lines += ["### Tuning on the valid window (seed 0)", "", "| variant | tried (valid AUC) | chosen |",
                      "|---|---|---|"]
            for variant, tuning in summary["tuning"].items():
                tried = "; ".join(", ".join(f"{k} {v:g}" for k, v in t.items() if k != "valid_auc")
                                  + f": {t['valid_auc']:.4f}" for t in tuning["tried"])
                chosen = ", ".join(f"{k} {v:g}" for k, v in tuning["chosen"].items())
                lines.append(f"| {variant} | {tried} | {chosen}{' (cached)' if tuning['cached'] else ''} |")
            lines += ["", summary["protocol"], ""]
        if summary.get("stream"):
            lines += ["### Batch only vs batch + stream (after the replayed valid window)", "",
                      "| variant | test AUC | ECE | click AUC on the exploration slice |", "|---|---|---|---|"]
            lines += [f"| {r['name']} | {_fmt(r['auc'])} ± {_fmt(r['auc_std'])} | {_fmt(r['ece'])} | "
                      f"{_fmt(r['exploration_click_auc'])} |" for r in summary["stream"]]
            debiasing = summary["debiasing_evaluation"]
            explored = debiasing["exploration_slice"] or {}
            lines += ["", "#### Debiasing, measured", "", debiasing["design"],
                      f"Exploration slice: {explored.get('requests', 0):,} requests, {explored.get('clicks', 0):,} "
                      "clicks.", "", "| ablation | test AUC - stream [95% CI] | exploration click AUC - stream "
                      "[95% CI] |", "|---|---|---|"]
            for name in ("stream_no_ipw", "stream_no_position_tower", "batch_only"):
                if name in debiasing:
                    cells = [debiasing[name].get(k) for k in ("test_auc_minus_stream",
                                                              "exploration_click_auc_minus_stream")]
                    lines.append(f"| {name} | " + " | ".join(
                        "n/a" if c is None else f"{c['difference']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}]"
                        for c in cells) + " |")
            lines.append("")
        if summary.get("promoted_versions"):
            lines += ["### Versions served during the replay", "", "| at (s) | phase | version | test AUC |",
                      "|---|---|---|---|"]
            lines += [f"| {v['at_s']} | {v['phase']} | {v['version']} | {_fmt(v['test']['auc'])} |"
                      for v in summary["promoted_versions"]]
            lines.append("")
    serving = report["serving"]
    if serving:
        lines += ["## Serving during the replay", "",
                  f"{serving['requests']:,} requests (HTTP and gRPC alternating) in {serving['duration_s']} s, "
                  f"{serving['errors']} errors, p50 {serving['p50_ms']} ms, p99 {serving['p99_ms']} ms, "
                  f"{serving['swaps']} hot swaps, {serving['refused_by_gate']} exports refused by the gate, "
                  f"{serving['feedback_errors']} feedback errors. Latency is measured by the replay client on the "
                  "same 2 cores as the server, Triton and the training worker.", ""]
        if serving["failed"]:
            lines += [f"**The run failed**: more than {MAX_ERROR_SHARE:.0%} of the replay's requests failed; the "
                      f"first error ({serving['first_error_count']} times): `{serving['first_error']}`. The "
                      "figures below are not the served loop's.", ""]
        ab = serving.get("online_ab")
        if ab and "treatment_minus_control" in ab:
            lines += ["### Online A/B test (traffic split by user, at the same time)", "",
                      f"From {ab['started_at_s']} s on, {ab['share_held_back']:.0%} of users (by a hash of the user "
                      f"id) stayed on the baseline `{ab['control_version']}`; the others got the batch student and "
                      "then each streamed version. Exploration-slice requests are left out.", "",
                      "| arm | requests | users | " + " | ".join(ab["treatment_minus_control"]) + " |",
                      "|---|---|---|" + "---|" * len(ab["treatment_minus_control"])]
            for arm in ("control", "treatment"):
                lines.append(f"| {arm} | {ab[arm]['requests']:,} | {ab[arm]['users']:,} | "
                             + " | ".join(_fmt(ab[arm][m]) for m in ab["treatment_minus_control"]) + " |")
            lines.append("| treatment - control [95% CI, users resampled] | | | " + " | ".join(
                f"{d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
                for d in ab["treatment_minus_control"].values()) + " |")
            lines.append("")
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]] + [""]
    return "\n".join(lines)


def print_summary(report: dict[str, Any]) -> None:
    table = Table(title="Rec-Distill demo: test window")
    for column in ("task", "teacher AUC", "baseline AUC", "distilled AUC", "attributable [95%]", "raw [95%]"):
        table.add_column(column, justify="right")

    def with_interval(value: float | None, ci: dict[str, Any] | None) -> str:
        return _fmt(value, 3) + ("" if ci is None else f" [{_fmt(ci['low'], 3)}, {_fmt(ci['high'], 3)}]")

    for task, s in report["tasks"].items():
        table.add_row(task, _fmt(s["teacher"]["auc"]), _fmt(s["student_baseline"]["auc"]),
                      _fmt(s["student_distilled"]["auc"]),
                      with_interval(s["transferability_attributable"], s["transferability_attributable_ci95"]),
                      with_interval(s["transferability"], s["transferability_ci95"]))
    Console().print(table)
    if report["serving"]:
        serving = report["serving"]
        Console().print(f"serving: {serving['requests']:,} requests, {serving['errors']} errors, "
                     f"p50 {serving['p50_ms']} ms, p99 {serving['p99_ms']} ms, {serving['swaps']} hot swaps")
