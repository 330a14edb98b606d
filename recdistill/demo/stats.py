"""Transferability with its guards: paired seeds, controls, and a bootstrap that resamples users (the unit
events cluster in), the seed pairs and the teachers, keeping every draw.

- raw: (distilled - baseline) / (teacher - baseline), the share of the teacher's gain recovered;
- teacher-attributable: (distilled - reference) / (teacher - baseline), where the reference is the best of
  the baseline and the controls (soft targets without the teacher: self-distillation, label smoothing, a
  short-history teacher), so the teacher is never credited with what a control also reaches. Its numerator,
  `attributable_gain_auc`, is reported with its own paired interval: the figure to read when gains are small.

Every variant runs on the same seeds; a draw picks seed indices once and applies them to the baseline, the
method and every control alike (paired). A ratio is defined only when the teacher's gain has an interval
above 0. A draw whose gain is at or below 0 is kept, as an unbounded ratio on the side its numerator points
to, and counted (`undefined_draws`); the interval's ends are order statistics, so an end that falls on such
a draw is reported as unbounded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recdistill.core.bootstrap import RankedScores as _Ranked
from recdistill.core.bootstrap import Users, picked_means

CONFIDENCE = (2.5, 97.5)


def std(values: Sequence[float]) -> float | None:
    """The sample standard deviation (ddof=1); None for fewer than two values."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def interval(values: Sequence[float]) -> dict[str, Any]:
    """The 95% percentile interval of bootstrap draws, as order statistics (no interpolation towards an
    unbounded draw); an end that is unbounded is None with its flag set."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    low = float(np.percentile(ordered, CONFIDENCE[0], method="lower"))
    high = float(np.percentile(ordered, CONFIDENCE[1], method="higher"))
    return {"low": round(low, 4) if np.isfinite(low) else None,
            "high": round(high, 4) if np.isfinite(high) else None,
            "low_unbounded": bool(np.isneginf(low)), "high_unbounded": bool(np.isposinf(high))}


def _ratio(numerator: float, gain: float) -> float:
    """numerator / gain; a gain at or below 0 gives an unbounded ratio on the numerator's side."""
    if gain > 0:
        return numerator / gain
    return np.inf if numerator > 0 else -np.inf


@dataclass(frozen=True)
class Figures:
    """The seed-mean AUCs one draw (or the point estimate) gives."""

    teacher: float
    baseline: float
    method: float
    controls: dict[str, float]

    @property
    def reference(self) -> float:
        """What the teacher is measured against: the best of the baseline and the controls."""
        return max([self.baseline, *self.controls.values()])

    @property
    def gain(self) -> float:
        return self.teacher - self.baseline


def transferability_figures(labels: np.ndarray, mask: np.ndarray, user_ids: np.ndarray,
                            teachers: Sequence[np.ndarray], baseline: Sequence[np.ndarray],
                            method: Sequence[np.ndarray], controls: Mapping[str, Sequence[np.ndarray]],
                            samples: int, seed: int = 0) -> dict[str, Any]:
    """Point estimates and 95% intervals of the teacher's gain, the method's gain, the attributable gain
    (method - best control) and both ratios, on scores [events, candidates] of one holdout (`mask`: the
    real candidates of padded slates). `baseline`, `method` and each control hold one score array per
    seed, in the same seed order (paired)."""
    seeds = len(method)
    if len(baseline) != seeds or any(len(runs) != seeds for runs in controls.values()):
        raise ValueError("every variant needs the method's seeds, in the same order (paired): "
                         f"method {seeds}, baseline {len(baseline)}, "
                         + ", ".join(f"{name} {len(runs)}" for name, runs in controls.items()))
    holdout = Users(user_ids)

    def rank(runs: Sequence[np.ndarray]) -> list[_Ranked]:
        return [_Ranked.of(s, labels, mask, holdout) for s in runs]

    ranked = {"teacher": rank(teachers), "baseline": rank(baseline), "method": rank(method),
              **{f"control:{name}": rank(runs) for name, runs in controls.items()}}

    def figures(users: np.ndarray | None, picks: np.ndarray, teacher_picks: np.ndarray) -> Figures:
        def mean(name: str, chosen: np.ndarray) -> float:
            return float(np.mean([ranked[name][i].auc(users) for i in chosen]))

        return Figures(mean("teacher", teacher_picks), mean("baseline", picks), mean("method", picks),
                       {name: mean(f"control:{name}", picks) for name in controls})

    point = figures(None, np.arange(seeds), np.arange(len(teachers)))
    drawn, (picks, teacher_picks) = holdout.resamples(np.random.default_rng(seed), samples, seeds, len(teachers))
    means = {name: picked_means(np.stack([r.aucs(drawn) for r in runs], axis=1), teacher_picks
                                if name == "teacher" else picks) for name, runs in ranked.items()}
    draws = [Figures(float(means["teacher"][i]), float(means["baseline"][i]), float(means["method"][i]),
                     {name: float(means[f"control:{name}"][i]) for name in controls}) for i in range(samples)]
    gain_interval = interval([d.gain for d in draws])
    defined = gain_interval["low"] is not None and gain_interval["low"] > 0

    def ratio(value: float) -> float | None:
        return round(value, 4) if defined and np.isfinite(value) else None

    return {
        "teacher_gain_auc": round(point.gain, 6), "teacher_gain_auc_ci95": gain_interval,
        "gain_auc": round(point.method - point.baseline, 6),
        "gain_auc_ci95": interval([d.method - d.baseline for d in draws]),
        "attributable_gain_auc": round(point.method - point.reference, 6),
        "attributable_gain_auc_ci95": interval([d.method - d.reference for d in draws]),
        "best_control": max(point.controls, key=point.controls.__getitem__) if point.controls else None,
        "ratio_defined": defined,
        "transferability": ratio(_ratio(point.method - point.baseline, point.gain)),
        "transferability_ci95": interval([_ratio(d.method - d.baseline, d.gain) for d in draws]) if defined else None,
        "transferability_attributable": ratio(_ratio(point.method - point.reference, point.gain)),
        "transferability_attributable_ci95": interval([_ratio(d.method - d.reference, d.gain) for d in draws])
        if defined else None,
        "undefined_draws": sum(d.gain <= 0 for d in draws),
        "bootstrap_resamples": samples,
        "aucs": {"teacher": round(point.teacher, 6), "baseline": round(point.baseline, 6),
                 "method": round(point.method, 6), **{k: round(v, 6) for k, v in point.controls.items()}},
    }


def auc_difference(labels: np.ndarray, mask: np.ndarray, user_ids: np.ndarray, runs: Sequence[np.ndarray],
                   reference: Sequence[np.ndarray], samples: int, seed: int = 0) -> dict[str, Any]:
    """Seed-mean AUC of `runs` minus that of `reference` (paired by seed: runs[i] against reference[i]), on
    the same events, with a 95% interval that resamples users and the seed pairs (over the draws where both
    AUCs are defined; the others are counted in `undefined_draws`)."""
    users = Users(user_ids)
    ranked = [(_Ranked.of(a, labels, mask, users), _Ranked.of(b, labels, mask, users))
              for a, b in zip(runs, reference, strict=True)]
    point = float(np.mean([a.auc() - b.auc() for a, b in ranked]))
    drawn, (picks,) = users.resamples(np.random.default_rng(seed), samples, len(ranked))
    values = picked_means(np.stack([a.aucs(drawn) - b.aucs(drawn) for a, b in ranked], axis=1), picks)
    defined = np.isfinite(values)
    low, high = np.percentile(np.asarray(values)[defined], [2.5, 97.5])
    return {"difference": round(point, 4), "low": round(float(low), 4), "high": round(float(high), 4),
            "samples": samples, "resamples": "users, paired seeds", "undefined_draws": int((~defined).sum())}


def arm_difference(treatment: np.ndarray, treatment_users: np.ndarray, control: np.ndarray,
                   control_users: np.ndarray, samples: int, seed: int = 0) -> dict[str, Any]:
    """Mean of a per-request metric in the treatment arm minus the control arm's, with a 95% interval that
    resamples users within each arm (an A/B split by user: the arms hold different users)."""
    rng, treated, controlled = np.random.default_rng(seed), Users(treatment_users), Users(control_users)
    values = []
    for _ in range(samples):
        t, c = treated.weights(rng), controlled.weights(rng)
        values.append(float(np.average(treatment, weights=t) - np.average(control, weights=c)))
    low, high = np.percentile(values, [2.5, 97.5])
    return {"difference": round(float(treatment.mean() - control.mean()), 4), "low": round(float(low), 4),
            "high": round(float(high), 4), "samples": samples, "resamples": "users within each arm"}


HISTORY_BUCKETS = ((0, 10), (10, 100), (100, 1_000), (1_000, None))  # events before the test event


def by_history_length(history: np.ndarray, labels: np.ndarray, mask: np.ndarray, user_ids: np.ndarray,
                      teachers: Sequence[np.ndarray], baseline: Sequence[np.ndarray], method: Sequence[np.ndarray],
                      controls: Mapping[str, Sequence[np.ndarray]], samples: int, seed: int = 0) -> list[dict]:
    """`transferability_figures` within each bucket of history length (`history`: per holdout row, how
    many events of its user came before it), where a long-history teacher should differ most. A bucket
    without both labels is listed with its counts only."""
    out = []
    for low, high in HISTORY_BUCKETS:
        rows = (history >= low) & (history < (high if high is not None else np.inf))
        bucket: dict[str, Any] = {"history_events": f"{low}-{high - 1}" if high is not None else f"{low}+",
                                  "events": int(rows.sum()), "users": int(np.unique(user_ids[rows]).size)}
        positives = labels[rows][mask[rows]]
        if rows.any() and (positives > 0.5).any() and (positives <= 0.5).any():
            bucket |= transferability_figures(
                labels[rows], mask[rows], user_ids[rows], [t[rows] for t in teachers], [b[rows] for b in baseline],
                [m[rows] for m in method], {name: [r[rows] for r in runs] for name, runs in controls.items()},
                samples, seed)
        out.append(bucket)
    return out
