"""Transferability with its guards: paired seeds, a minimum teacher gain, controls, and a bootstrap
interval that resamples users (the unit events cluster in) and seeds.

Two ratios, both on seed-mean test AUCs:
- raw: (distilled - baseline) / (teacher - baseline), the share of the teacher's gain recovered;
- teacher-attributable: (distilled - best control) / (teacher - baseline), where a control is a soft
  target without the teacher (self-distillation, label smoothing, ...). The best control is the one
  with the highest AUC, so the attributable figure never credits the teacher with what a control
  also reaches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def transferability(teacher_auc: float, baseline_auc: float, student_auc: float, min_gain: float) -> float | None:
    """Share of the teacher's AUC gain over the baseline that the student recovers; None when the gain
    is below `min_gain` (a ratio of two noise-level differences means nothing)."""
    gain = teacher_auc - baseline_auc
    if not np.isfinite(gain) or gain < min_gain:
        return None
    return float((student_auc - baseline_auc) / gain)


def std(values: Sequence[float]) -> float | None:
    """The sample standard deviation (ddof=1); None for fewer than two values."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


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


def user_weights(user_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row weights of one cluster-bootstrap resample: users drawn with replacement, each draw bringing
    all of that user's events (a heavy user's events rise and fall together)."""
    _, inverse, counts = np.unique(user_ids, return_inverse=True, return_counts=True)
    draws = rng.multinomial(counts.size, np.full(counts.size, 1.0 / counts.size))
    return draws[inverse].astype(np.float64)


def ratios(teacher: float, baseline: float, student: float, controls: Mapping[str, float], min_gain: float
           ) -> tuple[float | None, float | None]:
    """(raw, attributable) from seed-mean AUCs; both None when the teacher's gain is under `min_gain`."""
    raw = transferability(teacher, baseline, student, min_gain)
    if raw is None:
        return None, None
    best_control = max(controls.values(), default=baseline)
    return raw, float((student - max(best_control, baseline)) / (teacher - baseline))


def _interval(values: list[float], samples: int, undefined: int) -> dict[str, float | int | None]:
    if not values:
        return {"low": None, "high": None, "samples": samples, "undefined": undefined}
    low, high = np.percentile(values, [2.5, 97.5])
    return {"low": round(float(low), 4), "high": round(float(high), 4), "samples": samples, "undefined": undefined,
            "resamples": "users (all events of a drawn user), paired seeds, teacher seeds"}


def bootstrap_transferability(labels: np.ndarray, mask: np.ndarray, user_ids: np.ndarray,
                              teachers: Sequence[np.ndarray], baselines: Sequence[np.ndarray],
                              students: Sequence[np.ndarray], controls: Mapping[str, Sequence[np.ndarray]],
                              samples: int, min_gain: float, seed: int = 0
                              ) -> dict[str, dict[str, float | int | None]]:
    """95% intervals of the raw and the teacher-attributable ratio of seed-mean AUCs.

    Each resample draws users with replacement (the rows' weights), the paired (baseline, distilled)
    seeds with replacement, each control's seeds and the teachers with replacement, then computes both
    ratios as the point estimate does. Scores are [events, candidates] on the same holdout.
    """
    ranked_teachers = [_Ranked.of(s, labels, mask) for s in teachers]
    ranked_base = [_Ranked.of(s, labels, mask) for s in baselines]
    ranked_student = [_Ranked.of(s, labels, mask) for s in students]
    ranked_controls = {name: [_Ranked.of(s, labels, mask) for s in runs] for name, runs in controls.items() if runs}
    rng = np.random.default_rng(seed)

    def mean_auc(models: list[_Ranked], weights: np.ndarray, picks: np.ndarray) -> float:
        return float(np.mean([models[i].auc(weights) for i in picks]))

    raw_values: list[float] = []
    attributable_values: list[float] = []
    undefined = 0
    for _ in range(samples):
        weights = user_weights(user_ids, rng)
        pairs = rng.integers(len(ranked_base), size=len(ranked_base))
        teacher = mean_auc(ranked_teachers, weights, rng.integers(len(ranked_teachers), size=len(ranked_teachers)))
        control_aucs = {name: mean_auc(runs, weights, rng.integers(len(runs), size=len(runs)))
                        for name, runs in ranked_controls.items()}
        raw, attributable = ratios(teacher, mean_auc(ranked_base, weights, pairs),
                                   mean_auc(ranked_student, weights, pairs), control_aucs, min_gain)
        if raw is None or attributable is None:
            undefined += 1
            continue
        raw_values.append(raw)
        attributable_values.append(attributable)
    return {"raw": _interval(raw_values, samples, undefined),
            "attributable": _interval(attributable_values, samples, undefined)}


def auc_difference(labels: np.ndarray, mask: np.ndarray, user_ids: np.ndarray, runs: Sequence[np.ndarray],
                   reference: Sequence[np.ndarray], samples: int, seed: int = 0) -> dict[str, Any]:
    """Seed-mean AUC of `runs` minus that of `reference` (paired by seed: runs[i] against reference[i]), on
    the same events, with a 95% interval that resamples users and the seed pairs."""
    ranked = [(_Ranked.of(a, labels, mask), _Ranked.of(b, labels, mask)) for a, b in zip(runs, reference, strict=True)]
    ones = np.ones(labels.shape[0])
    point = float(np.mean([a.auc(ones) - b.auc(ones) for a, b in ranked]))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        weights = user_weights(user_ids, rng)
        picks = rng.integers(len(ranked), size=len(ranked))
        values.append(float(np.mean([ranked[i][0].auc(weights) - ranked[i][1].auc(weights) for i in picks])))
    low, high = np.percentile(values, [2.5, 97.5])
    return {"difference": round(point, 4), "low": round(float(low), 4), "high": round(float(high), 4),
            "samples": samples, "resamples": "users, paired seeds"}


def arm_difference(treatment: np.ndarray, treatment_users: np.ndarray, control: np.ndarray,
                   control_users: np.ndarray, samples: int, seed: int = 0) -> dict[str, Any]:
    """Mean of a per-request metric in the treatment arm minus the control arm's, with a 95% interval that
    resamples users within each arm (an A/B split by user: the arms hold different users)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        t, c = user_weights(treatment_users, rng), user_weights(control_users, rng)
        values.append(float(np.average(treatment, weights=t) - np.average(control, weights=c)))
    low, high = np.percentile(values, [2.5, 97.5])
    return {"difference": round(float(treatment.mean() - control.mean()), 4), "low": round(float(low), 4),
            "high": round(float(high), 4), "samples": samples, "resamples": "users within each arm"}
