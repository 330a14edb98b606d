"""Transferability with its guards: paired seeds, a minimum teacher gain, and a bootstrap interval."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def transferability(teacher_auc: float, baseline_auc: float, student_auc: float, min_gain: float) -> float | None:
    """Share of the teacher's AUC gain over the baseline that the student recovers; None when the gain
    is below `min_gain` (a ratio of two noise-level differences means nothing)."""
    gain = teacher_auc - baseline_auc
    if not np.isfinite(gain) or gain < min_gain:
        return None
    return float((student_auc - baseline_auc) / gain)


@dataclass
class _Ranked:
    """One model's scores on the holdout, sorted once: a resample only changes the weights."""

    rows: np.ndarray  # event row of each candidate, in ascending score order
    positive: np.ndarray  # bool, same order

    @classmethod
    def of(cls, scores: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> _Ranked:
        rows = np.broadcast_to(np.arange(scores.shape[0])[:, None], scores.shape)[mask]
        order = np.argsort(scores[mask], kind="stable")
        return cls(rows[order], labels[mask][order] > 0.5)

    def auc(self, row_weights: np.ndarray) -> float:
        weights = row_weights[self.rows]
        negative = np.where(self.positive, 0.0, weights)
        below = np.cumsum(negative) - negative  # weight of negatives scored below each candidate
        positive_weight = weights[self.positive].sum()
        return float((weights[self.positive] * below[self.positive]).sum() / (positive_weight * negative.sum()))


def bootstrap_transferability(labels: np.ndarray, mask: np.ndarray, teacher: np.ndarray,
                              baselines: Sequence[np.ndarray], students: Sequence[np.ndarray],
                              samples: int, min_gain: float, seed: int = 0) -> dict[str, float | int | None]:
    """95% interval of transferability (seed-mean AUCs) over events resampled with replacement.

    Scores are [events, candidates] on the same holdout; baselines[i] and students[i] share seed i.
    """
    ranked_teacher = _Ranked.of(teacher, labels, mask)
    ranked_base = [_Ranked.of(s, labels, mask) for s in baselines]
    ranked_student = [_Ranked.of(s, labels, mask) for s in students]
    rng = np.random.default_rng(seed)
    values, undefined = [], 0
    for _ in range(samples):
        weights = rng.multinomial(labels.shape[0], np.full(labels.shape[0], 1.0 / labels.shape[0])).astype(float)
        base = float(np.mean([r.auc(weights) for r in ranked_base]))
        ratio = transferability(ranked_teacher.auc(weights), base,
                                float(np.mean([r.auc(weights) for r in ranked_student])), min_gain)
        if ratio is None:
            undefined += 1
        else:
            values.append(ratio)
    if not values:
        return {"low": None, "high": None, "samples": samples, "undefined": undefined}
    low, high = np.percentile(values, [2.5, 97.5])
    return {"low": round(float(low), 4), "high": round(float(high), 4), "samples": samples, "undefined": undefined}
