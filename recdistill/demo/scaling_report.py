"""The scaling study's table (markdown) and plots (PNG): teacher AUC, student AUC, raw and attributable
transferability, each with its user-level interval, against teacher size and against history length."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend

from recdistill.core.contracts.figures import Interval  # noqa: E402
from recdistill.core.contracts.scaling import ScalingReport, ScalingRow  # noqa: E402

PANELS = (("teacher_auc", "teacher AUC (test)"), ("student_auc", "distilled student AUC (test)"),
          ("transferability", "raw transferability"),
          ("transferability_attributable", "attributable transferability"))
CLIP = (-1.0, 2.0)  # ratios' interval ends drawn inside this range (an unbounded end at its edge)


def _limit(limit: int | None) -> str:
    return "all" if limit is None else str(limit)


def _interval(value: Interval | None) -> str:
    if value is None:
        return "-"
    low = "-inf" if value.low_unbounded else f"{value.low:+.3f}" if value.low is not None else "?"
    high = "+inf" if value.high_unbounded else f"{value.high:+.3f}" if value.high is not None else "?"
    return f"[{low}, {high}]"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def scaling_table(report: ScalingReport) -> str:
    lines = [f"Teacher scaling on {report.dataset} ({report.task}, test window: {report.test_events:,} events, "
             f"{report.test_users} users; baseline student AUC {report.baseline_auc:.4f} "
             f"{_interval(report.baseline_auc_ci95)}; controls "
             + ", ".join(f"{k} {v:.4f}" for k, v in report.controls_auc.items()) + ")", "",
             "| size | history | parameters | teacher AUC | student AUC | raw transferability | "
             "attributable transferability | attributable gain | reference |",
             "| --- | --- | ---: | --- | --- | --- | --- | --- | --- |"]
    for r in report.rows:
        lines.append(
            f"| {r.size} | {_limit(r.history_limit)} | {r.parameters:,} | {r.teacher_auc:.4f} "
            f"{_interval(r.teacher_auc_ci95)} | {r.student_auc:.4f} {_interval(r.student_auc_ci95)} | "
            f"{_number(r.transferability)} {_interval(r.transferability_ci95)} | "
            f"{_number(r.transferability_attributable)} {_interval(r.transferability_attributable_ci95)} | "
            f"{r.attributable_gain_auc:+.4f} {_interval(r.attributable_gain_auc_ci95)} | {r.best_control} |")
    if report.history_value:
        lines += ["", "Before any training, a repeat scorer (how often the last N events hold the candidate) scores "
                  + ", ".join(f"{row['auc']:.3f} with {row['history_events']}" for row in report.history_value)
                  + " events: what the history is worth on these slates."]
    lines += ["", "A ratio is `-` where the teacher's gain over the baseline has no interval above 0. Intervals: 95%, "
              "users resampled with the paired seeds, every draw kept."]
    return "\n".join(lines) + "\n"


def _errorbar(axis: plt.Axes, xs: list[float], rows: list[ScalingRow], field: str, label: str) -> None:
    points, lows, highs, kept = [], [], [], []
    for x, row in zip(xs, rows, strict=True):
        value = getattr(row, field)
        if value is None:
            continue
        ci: Interval | None = getattr(row, f"{field}_ci95")
        low = CLIP[0] if ci is None or ci.low is None else max(ci.low, CLIP[0])
        high = CLIP[1] if ci is None or ci.high is None else min(ci.high, CLIP[1])
        kept.append(x)
        points.append(value)
        lows.append(max(value - low, 0.0))
        highs.append(max(high - value, 0.0))
    if kept:
        axis.errorbar(kept, points, yerr=[lows, highs], marker="o", capsize=3, label=label)


def plot_scaling(report: ScalingReport, out: Path) -> list[Path]:
    """`scaling_by_size.png` (one line per history limit) and `scaling_by_history.png` (one per size)."""
    sizes = list(dict.fromkeys(r.size for r in report.rows))
    limits = list(dict.fromkeys(r.history_limit for r in report.rows))
    longest = max((r.history_limit or 0 for r in report.rows), default=0)
    paths = []
    for name, groups, x_of, x_label, log_x in (
            ("by_size", [(f"history {_limit(limit)}", [r for r in report.rows if r.history_limit == limit])
                         for limit in limits], lambda r: float(r.parameters), "teacher parameters", True),
            ("by_history", [(size, [r for r in report.rows if r.size == size]) for size in sizes],
             lambda r: float(r.history_limit or max(10 * longest, 20_000)), "history limit (events; right: all)",
             True)):
        figure, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4.2))
        for axis, (field, title) in zip(axes, PANELS, strict=True):
            for label, rows in groups:
                rows = sorted(rows, key=x_of)
                _errorbar(axis, [x_of(r) for r in rows], rows, field, label)
            if field.endswith("auc"):
                axis.axhline(report.baseline_auc, color="grey", linestyle="--", linewidth=1, label="baseline student")
            else:
                axis.axhline(0.0, color="grey", linewidth=1)
            axis.set(title=title, xlabel=x_label, xscale="log" if log_x else "linear")
            if axis.get_legend_handles_labels()[0]:
                axis.legend(fontsize=7)
        figure.suptitle(f"{report.dataset}: what the student recovers as the teacher grows and reads further back")
        figure.tight_layout()
        path = out / f"scaling_{name}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths
