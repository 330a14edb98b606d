"""The demo report's people-facing forms: report.md and the terminal summary, from report.json's content."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

METRICS = ("auc", "gauc", "log_loss", "ece", "ndcg@10")
MAX_ERROR_SHARE = 0.01  # more of the replay failing makes the run a failure: `recdistill demo` exits 1


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
        lines += _task_lines(task, summary, task == report["headline_task"])
    lines += _scenario_lines(report.get("scenarios", []))
    if report["serving"]:
        lines += _serving_lines(report["serving"])
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]] + [""]
    return "\n".join(lines)


def _scenario_lines(scenarios: list[dict[str, Any]]) -> list[str]:
    """One row per declared scenario: its student's view against the one teacher (the first's are the headline
    task's figures)."""
    if len(scenarios) < 2:
        return []
    lines = ["## Scenarios: one teacher, a student per scenario", "",
             "| scenario | task | view (history events) | student params | teacher AUC | baseline AUC | distilled AUC "
             "| transferability [95% CI] | attributable [95% CI] | window labels found in the store |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: |"]
    for s in scenarios:
        if not s["evaluated"]:
            lines.append(f"| {s['name']} | {s['task']} | {s['view']} ({s['history_events']}) | n/a | n/a | n/a | n/a "
                         f"| {s['note']} | | |")
            continue
        ratios = [_fmt(s[key], 3) + ("" if s[f"{key}_ci95"] is None else f" {_ci(s[f'{key}_ci95'], 3)}")
                  for key in ("transferability", "transferability_attributable")]
        lines.append(f"| {s['name']} | {s['task']} | {s['view']} ({s['history_events']}) | {s['student_parameters']:,} "
                     f"| {_fmt(s['teacher_auc'])} | {_fmt(s['baseline_auc'])} | {_fmt(s['distilled_auc'])} "
                     f"| {ratios[0]} | {ratios[1]} | {_fmt(s['label_hit_rate'], 2)} |")
    return [*lines, ""]


def print_summary(report: dict[str, Any]) -> None:
    table = Table(title="Rec-Distill demo: test window")
    for column in ("task", "teacher AUC", "baseline AUC", "distilled AUC", "attributable [95%]", "raw [95%]"):
        table.add_column(column, justify="right")

    def with_interval(value: float | None, ci: dict[str, Any] | None) -> str:
        return _fmt(value, 3) + ("" if ci is None else f" {_ci(ci, 3)}")

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


def _ci(ci: dict[str, Any], digits: int = 4) -> str:
    """[low, high], an unbounded end as -inf / +inf."""
    low = "-inf" if ci.get("low_unbounded") else _fmt(ci["low"], digits)
    high = "+inf" if ci.get("high_unbounded") else _fmt(ci["high"], digits)
    return f"[{low}, {high}]"


def _transferability_lines(summary: dict[str, Any]) -> list[str]:
    lines = [f"Teacher gain over the baseline: {summary['teacher_gain_auc']:+.4f} test AUC "
             f"{_ci(summary['teacher_gain_auc_ci95'])} ({summary['test_events']:,} test events from "
             f"{summary['test_users']} users, {summary['teacher_seeds']} teacher seed(s); student seed s learns from "
             "teacher seed s mod their number).",
             f"**Attributable gain {summary['attributable_gain_auc']:+.4f} test AUC** "
             f"{_ci(summary['attributable_gain_auc_ci95'])}: the distilled student minus the best of the baseline "
             f"and the controls ({summary['best_control'] or 'none ran'}), paired by seed; the method's whole gain "
             f"over the baseline is {summary['gain_auc']:+.4f} {_ci(summary['gain_auc_ci95'])}."]
    if not summary["ratio_defined"]:
        lines += ["The teacher's gain has an interval that reaches 0: **no transferability ratio is defined** "
                  "(a ratio of two noise-level differences means nothing); the gains above are the figures."]
    else:
        lines += [f"**Teacher-attributable transferability {_fmt(summary['transferability_attributable'], 3)}** "
                  f"{_ci(summary['transferability_attributable_ci95'], 3)}; raw transferability "
                  f"{_fmt(summary['transferability'], 3)} {_ci(summary['transferability_ci95'], 3)} (per seed "
                  f"{summary['transferability_per_seed']})."]
    lines += [f"Intervals: {summary['bootstrap_resamples']:,} bootstrap draws, every one kept "
              f"({summary['undefined_draws']} with a teacher gain at or below 0, counted as unbounded ratios).", ""]
    buckets = summary.get("by_history_length") or []
    if buckets:
        lines += ["| history events | users | events | teacher AUC | baseline AUC | distilled AUC | attributable gain "
                  "[95%] | attributable transferability |", "|---|---|---|---|---|---|---|---|"]
        for b in buckets:
            if "aucs" not in b:
                lines.append(f"| {b['history_events']} | {b['users']} | {b['events']} | n/a | n/a | n/a | n/a | n/a |")
                continue
            lines.append(f"| {b['history_events']} | {b['users']} | {b['events']:,} | {_fmt(b['aucs']['teacher'])} | "
                         f"{_fmt(b['aucs']['baseline'])} | {_fmt(b['aucs']['method'])} | "
                         f"{b['attributable_gain_auc']:+.4f} {_ci(b['attributable_gain_auc_ci95'])} | "
                         f"{_fmt(b['transferability_attributable'], 3)} |")
        lines.append("")
    if summary.get("history_value"):
        lines += ["What the history is worth before any training (a repeat scorer: how often the last N events hold "
                  "the candidate, on the test slates): " + ", ".join(
                      f"{row['history_events']} events AUC {row['auc']:.3f} ({row['positives_in_window']:.0%} of the "
                      "real items in the window)" for row in summary["history_value"]) + ".", ""]
    return lines


def _channel_lines(summary: dict[str, Any]) -> list[str]:
    """The channel: the student's training window, the no-teacher references and the teacher's margin over the
    better one, and what each channel control reached."""
    lines = []
    if summary.get("references"):
        margin = summary["teacher_margin_over_best_reference"]
        lines += [f"### The channel (students trained on {summary['student_window_events']} events per user)", "",
                  "| no-teacher reference, same test slates | test AUC | teacher minus it |", "|---|---|---|"]
        lines += [f"| {row['name']} | {_fmt(row['auc'])} | {_fmt(row['teacher_margin_auc'])} "
                  f"{_ci(row['teacher_margin_auc_ci95'])} |" for row in summary["references"]]
        lines += ["", f"The teacher's margin over the better reference ({margin['reference']}): {_fmt(margin['auc'])} "
                  f"{_ci(margin['ci95'])}; goal {margin['goal']} with the interval above 0: "
                  f"{'met' if margin['met'] else 'not met'}.", ""]
    if summary.get("channels"):
        lines += ["| channel control | test AUC | AUC - full method |", "|---|---|---|"]
        lines += [f"| {row['channel']} ({row['name']}) | {_fmt(row['auc'])} | {_fmt(row['auc_minus_full_method'])} |"
                  for row in summary["channels"]]
        lines.append("")
    return lines


def _task_lines(task: str, summary: dict[str, Any], headline: bool) -> list[str]:
    """One task's section: the models, transferability, ablations and controls, tuning, the stream, the
    versions served."""
    keys = tuple(k for k in METRICS if k in summary["teacher"])
    lines = [f"## Task `{task}`{' (headline: the serving scenario)' if headline else ''}",
             "", "| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|",
             _metric_row(f"teacher ({summary['teacher']['parameters']:,} params, full history)",
                         summary["teacher"], keys),
             *([_metric_row("short-history teacher (same size, last "
                            f"{summary['short_history_teacher']['history_events']} events; a control)",
                            summary["short_history_teacher"], keys)]
               if summary.get("short_history_teacher") else []),
             _metric_row(f"baseline student ({summary['student_parameters']:,} params, last 10 events, "
                         f"seeds {summary['student_baseline']['seeds']})",
                         summary["student_baseline"], keys),
             _metric_row(f"distilled student (seeds {summary['student_distilled']['seeds']})",
                         summary["student_distilled"], keys), ""]
    lines += _transferability_lines(summary)
    lines += _channel_lines(summary)
    for title, rows in (("Ablations", summary.get("ablations")), ("Controls", summary.get("controls"))):
        if not rows:
            continue
        lines += [f"### {title}", "", "| variant | test AUC | AUC - full method | transferability | what |",
                  "|---|---|---|---|---|"]
        for row in rows:
            lines.append(f"| {row['name']} | {_fmt(row['auc'])} ± {_fmt(row['auc_std'])} (seeds {row['seeds']}) | "
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
        lines += ["### Versions served during the replay", "",
                  "Each promotion passed the gate: non-inferior, on the gate's holdout, to the active version and "
                  "to the anchor (the batch version, moved only by a significantly better one), by a paired "
                  "user-level test (one-sided 95% lower bound above -margin).", "",
                  "| at (s) | phase | version | test AUC | holdout AUC - active [90% CI] | holdout AUC - anchor "
                  "[90% CI] | power at the margin |", "|---|---|---|---|---|---|---|"]
        for v in summary["promoted_versions"]:
            gate = v.get("gate") or {}
            cells = [f"{d['difference']:+.4f} [{d['ci90'][0]:+.4f}, {d['ci90'][1]:+.4f}]" if d else "n/a"
                     for d in (gate.get(role) for role in ("active", "anchor"))]
            power = (gate.get("anchor") or gate.get("active") or {}).get("power_at_margin")
            lines.append(f"| {v['at_s']} | {v['phase']} | {v['version']} | {_fmt(v['test']['auc'])} | "
                         f"{cells[0]} | {cells[1]} | {_fmt(power, 2)} |")
        below = summary.get("promoted_below_batch_by_more_than_margin")
        if below is not None:
            lines.append(f"\nStreamed versions whose test AUC fell below the batch version's by more than the "
                         f"margin: {len(below)} {below if below else ''}")
        lines.append("")
    return lines


def _serving_lines(serving: dict[str, Any]) -> list[str]:
    """The replay's section: what was served, and the online A/B test with its paired counterfactual."""
    lines = ["## Serving during the replay", "",
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
        click = ab["treatment_minus_control"]["click"]
        lines += ["", f"With this many users the live test detects a click-rate difference of "
                  f"{click['detectable_at_80_power']:.4f} with 80% power."]
        paired = serving.get("online_counterfactual")
        if paired:
            d = paired["treatment_minus_control"]
            lines += ["", "**Counterfactual, paired** (the replay knows each request's real item and the click "
                      "model, so both versions rank every request of the test's stretch and each request's "
                      f"expected click is paired): {paired['requests']:,} requests from {paired['users']} users, "
                      f"treatment - control expected click {d['difference']:+.4f} [{d['low']:+.4f}, "
                      f"{d['high']:+.4f}] (detects {d['detectable_at_80_power']:.4f} with 80% power), an "
                      f"interval {serving['counterfactual_narrower_by']}x narrower than the live A/B's."]
        lines.append("")
    return lines
