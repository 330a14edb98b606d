"""User-level (cluster) bootstrap of AUC on one holdout: the resampling the demo's statistics and the
worker's promotion gate share. A resample draws users with replacement, each draw bringing all of that
user's events (a heavy user's events rise and fall together); scores are sorted once per model, so a
resample only changes the rows' weights."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from recdistill.core.contracts.worker import NonInferiority


@dataclass
class RankedScores:
    """One model's scores [events, candidates] on a holdout, sorted once."""

    rows: np.ndarray  # event row of each candidate, in ascending score order
    positive: np.ndarray  # bool, same order

    @classmethod
    def of(cls, scores: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> RankedScores:
        """`mask`: the real candidates (padded slates have others); a label above 0.5 is a positive."""
        rows = np.broadcast_to(np.arange(scores.shape[0])[:, None], scores.shape)[mask]
        order = np.argsort(scores[mask], kind="stable")
        return cls(rows[order], labels[mask][order] > 0.5)

    def auc(self, row_weights: np.ndarray) -> float:
        """The pooled AUC with each event row counted `row_weights[row]` times."""
        weights = row_weights[self.rows]
        negative = np.where(self.positive, 0.0, weights)
        below = np.cumsum(negative) - negative  # weight of negatives scored below each candidate
        positive_weight = weights[self.positive].sum()
        return float((weights[self.positive] * below[self.positive]).sum() / (positive_weight * negative.sum()))


def user_weights(user_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row weights of one cluster-bootstrap resample: users drawn with replacement."""
    _, inverse, counts = np.unique(user_ids, return_inverse=True, return_counts=True)
    draws = rng.multinomial(counts.size, np.full(counts.size, 1.0 / counts.size))
    return draws[inverse].astype(np.float64)


def non_inferiority(candidate: np.ndarray, reference: np.ndarray, labels: np.ndarray, mask: np.ndarray,
                    user_ids: np.ndarray, margin: float, samples: int, power: float = 0.8,
                    seed: int = 0) -> NonInferiority:
    """Is `candidate` no worse than `reference` by more than the margin AUC on these events? A paired test
    (both score the same events; one user draw for both): non-inferior when the one-sided 95% lower bound of
    (candidate - reference) lies above -margin; better when it lies above 0.

    The margin is sized to the holdout: at least `margin`, and at least the loss this holdout refuses with
    `power` ((z_0.95 + z_power) standard errors of the paired difference), so a small holdout does not
    refuse every candidate that is not clearly better; both are reported, with the power at the margin."""
    a, b = RankedScores.of(candidate, labels, mask), RankedScores.of(reference, labels, mask)
    ones = np.ones(labels.shape[0])
    point = a.auc(ones) - b.auc(ones)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(samples):
        weights = user_weights(user_ids, rng)
        draws.append(a.auc(weights) - b.auc(weights))
    low, high = (float(v) for v in np.percentile(draws, [5.0, 95.0]))
    se = float(np.std(draws, ddof=1))
    z = NormalDist()
    sized = max(margin, (z.inv_cdf(0.95) + z.inv_cdf(power)) * se)
    achieved = z.cdf(sized / se - z.inv_cdf(0.95)) if se > 0 else 1.0
    return NonInferiority(difference=round(point, 6), ci90=(round(low, 6), round(high, 6)), se=round(se, 6),
                          margin=round(sized, 6), margin_configured=margin, power_at_margin=round(achieved, 3),
                          non_inferior=bool(low > -sized), better=bool(low > 0), samples=samples)
