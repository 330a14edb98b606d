"""The report's PNG plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend
import numpy as np  # noqa: E402

from recdistill.core.metrics import calibration_bins  # noqa: E402

if TYPE_CHECKING:
    from recdistill.demo.experiments import BatchExperiment
    from recdistill.demo.live import LiveResult


def plot_calibration(path: Path, experiments: dict[str, BatchExperiment]) -> Path:
    """Reliability curves on the test window: teacher, baseline and distilled student (seed 0)."""
    figure, axes = plt.subplots(1, len(experiments), figsize=(5 * len(experiments), 4.5), squeeze=False)
    for axis, (task, experiment) in zip(axes[0], experiments.items(), strict=True):
        labels = experiment.test.labels
        curves = {"teacher": experiment.teacher_test_scores}
        for variant in ("baseline", "distilled"):
            if (variant, 0) in experiment.runs:
                curves[f"{variant} student"] = experiment.runs[(variant, 0)].test_scores
        for name, scores in curves.items():
            mean_p, rate, counts = calibration_bins(labels, scores)
            filled = counts > 0
            axis.plot(mean_p[filled], rate[filled], marker="o", label=name)
        axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        axis.set(title=f"{task}: calibration on the test window", xlabel="predicted probability",
                 ylabel="observed positive rate", xlim=(0, 1), ylim=(0, 1))
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_auc_per_version(path: Path, versions: list[dict[str, Any]], teacher_auc: float, baseline_auc: float
                         ) -> Path:
    """Test AUC of each version at the moment it went live during the replay."""
    figure, axis = plt.subplots(figsize=(8, 4.5))
    times = [v["at_s"] for v in versions]
    aucs = [v["test"]["auc"] for v in versions]
    axis.step(times, aucs, where="post", color="tab:blue", label="served version")
    colours = {"baseline": "tab:grey", "batch": "tab:orange", "stream": "tab:green"}
    for version in versions:
        axis.scatter(version["at_s"], version["test"]["auc"], color=colours.get(version["phase"], "black"), zorder=3)
    for phase, colour in colours.items():
        axis.scatter([], [], color=colour, label=f"{phase} version")
    axis.axhline(teacher_auc, color="tab:red", linestyle="--", label=f"teacher {teacher_auc:.4f}")
    axis.axhline(baseline_auc, color="tab:grey", linestyle=":", label=f"baseline (seed mean) {baseline_auc:.4f}")
    axis.set(title="Test AUC of each promoted version, by when it went live", xlabel="seconds into the replay",
             ylabel="test AUC")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_latency(path: Path, live: LiveResult, bucket_s: float = 1.0) -> Path:
    """Client-side p50 / p99 per second of the replay, errors, and a line at each hot swap."""
    ok = [s for s in live.served if s.error is None]
    figure, axis = plt.subplots(figsize=(9, 4.5))
    if ok:
        sent = np.array([s.sent_s for s in ok])
        latency = np.array([s.latency_ms for s in ok])
        buckets = (sent // bucket_s).astype(int)
        centres, p50, p99 = [], [], []
        for bucket in np.unique(buckets):
            values = latency[buckets == bucket]
            centres.append((bucket + 0.5) * bucket_s)
            p50.append(np.percentile(values, 50))
            p99.append(np.percentile(values, 99))
        axis.plot(centres, p50, label="p50")
        axis.plot(centres, p99, label="p99")
    errors = [s.sent_s for s in live.served if s.error is not None]
    if errors:
        axis.scatter(errors, np.zeros(len(errors)), color="red", marker="x", label=f"errors ({len(errors)})")
    for index, swap in enumerate(live.swaps[1:]):
        axis.axvline(swap.at_s, color="tab:green" if swap.phase == "stream" else "tab:orange", linestyle="--",
                     linewidth=1, label="hot swap" if index == 0 else None)
    axis.set(title=f"Latency during the replay ({len(live.served):,} requests, HTTP + gRPC)",
             xlabel="seconds into the replay", ylabel="ms (client side)")
    axis.set_yscale("log")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
