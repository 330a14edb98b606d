"""User-level (cluster) bootstrap of AUC on one holdout: the resampling the demo's statistics and the
worker's promotion gate share. A resample draws users with replacement, each draw bringing all of that
user's events (a heavy user's events rise and fall together), so a resample is one count per user.

The pooled AUC of a resample only needs, for every pair of users (u, v), how many (positive of u, negative
of v) pairs are ordered right: with the draw counts d, AUC = d'Cd / ((d.P)(d.N)), P and N each user's
positives and negatives. `RankedScores` counts C once per model (one sort), so a draw costs a
users x users product instead of a pass over every candidate; where users are so many that the matrix
would cost more than the candidates, it keeps the sorted candidates and weighs them per draw instead. Every
count is a whole number, so every sum is exact in float64: all the resamples of an interval are scored at once
(`aucs`, one matrix product) and give the same numbers, to the last bit, as one draw at a time."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from recdistill.core.contracts.worker import NonInferiority
from recdistill.core.errors import DataError


class Users:
    """The users of a holdout's event rows, found once (sorting ids is slower than a draw), and their
    cluster-bootstrap resamples: users drawn with replacement, as many draws as users."""

    def __init__(self, user_ids: np.ndarray) -> None:
        _, self.of_row = np.unique(user_ids, return_inverse=True)  # each row's user, in sorted id order
        self.count = int(self.of_row.max()) + 1 if self.of_row.size else 0

    def draws(self, rng: np.random.Generator) -> np.ndarray:
        """One resample: how many times each user (in sorted id order) is drawn."""
        return rng.multinomial(self.count, np.full(self.count, 1.0 / self.count)).astype(np.float64)

    def weights(self, rng: np.random.Generator) -> np.ndarray:
        """One resample as row weights: each event row counted as often as its user was drawn."""
        return self.draws(rng)[self.of_row]

    def resamples(self, rng: np.random.Generator, samples: int, *seeds: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """`samples` resamples, [samples, users], and for each `seeds` count n the n indices drawn with
        replacement that each resample pairs with it ([samples, n]: which seed pairs, which teachers), drawn from
        `rng` resample by resample in that order (users, then each pick)."""
        drawn = np.empty((samples, self.count))
        picks = [np.empty((samples, n), dtype=np.int64) for n in seeds]
        for row in range(samples):
            drawn[row] = self.draws(rng)
            for pick, n in zip(picks, seeds, strict=True):
                pick[row] = rng.integers(n, size=n)
        return drawn, picks


def picked_means(aucs: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Per resample, the mean of the AUCs [resamples, runs] of the runs it picked ([resamples, k])."""
    return np.take_along_axis(aucs, picks, axis=1).mean(axis=1)


@dataclass
class RankedScores:
    """One model's scores [events, candidates] on a holdout, reduced to what a user resample needs."""

    pairs: np.ndarray | None  # [users, users]: (positive of u, negative of v) pairs with the positive above
    positives: np.ndarray  # [users]: each user's positives
    negatives: np.ndarray  # [users]: each user's negatives
    users: np.ndarray | None  # user index of each candidate in ascending score order (without `pairs`)
    positive: np.ndarray | None  # bool, same order (without `pairs`)

    @classmethod
    def of(cls, scores: np.ndarray, labels: np.ndarray, mask: np.ndarray, holdout: Users) -> RankedScores:
        """`mask`: the real candidates (padded slates have others); a label above 0.5 is a positive;
        `holdout`: the users of the event rows. Ties are broken by the candidates' order in the array, as in
        the stable sort the plain pooled AUC of this holdout uses."""
        users = holdout.count
        candidate_users = np.broadcast_to(holdout.of_row.reshape(-1, 1), scores.shape)[mask]
        order = np.argsort(scores[mask], kind="stable")
        ranked_users, positive = candidate_users[order], labels[mask][order] > 0.5
        positives = np.bincount(ranked_users[positive], minlength=users).astype(np.float64)
        negatives = np.bincount(ranked_users[~positive], minlength=users).astype(np.float64)
        if users * users > 4 * order.size:  # the matrix would cost more per draw than the candidates
            return cls(None, positives, negatives, ranked_users, positive)
        position = np.arange(order.size)
        positive_users, positive_at = ranked_users[positive], position[positive]
        negative_users, negative_at = ranked_users[~positive], position[~positive]
        by_user = np.argsort(negative_users, kind="stable")  # each user's negatives, in score order
        starts = np.searchsorted(negative_users[by_user], np.arange(users + 1))
        sorted_at = negative_at[by_user]
        pairs = np.empty((users, users))
        for v in range(users):
            below = np.searchsorted(sorted_at[starts[v]:starts[v + 1]], positive_at)
            pairs[:, v] = np.bincount(positive_users, weights=below, minlength=users)
        return cls(pairs, positives, negatives, None, None)

    def auc(self, draws: np.ndarray | None = None) -> float:
        """The pooled AUC with each user counted `draws[user]` times (users in sorted id order, as
        `Users.draws` gives them); every user once when None. NaN for a resample without a positive or
        without a negative (a few users' clicks: their AUC is undefined), as numpy's 0/0."""
        return float(self.aucs(np.ones(self.positives.size) if draws is None else draws)[0])

    def aucs(self, draws: np.ndarray) -> np.ndarray:
        """`auc` of each resample, rows of `draws` ([resamples, users]; one row may be given as [users]), at once."""
        d = np.atleast_2d(np.asarray(draws, dtype=np.float64))
        total = (d @ self.positives) * (d @ self.negatives)
        ordered = np.empty(len(d))  # (positive, negative) pairs ordered right, a block of resamples at a time
        width = self.pairs.shape[0] if self.pairs is not None else self.users.size  # type: ignore[union-attr]
        block = max(1, 2**22 // max(width, 1))  # about 32 MiB of float64 a block
        for start in range(0, len(d), block):
            part = d[start:start + block]
            if self.pairs is not None:
                ordered[start:start + block] = ((part @ self.pairs) * part).sum(axis=1)
            else:  # the candidates weighed per resample
                weights = part[:, self.users]
                negative = np.where(self.positive, 0.0, weights)
                below = np.cumsum(negative, axis=1) - negative  # weight of negatives scored below each candidate
                ordered[start:start + block] = (weights * below)[:, self.positive].sum(axis=1)
        return np.where(total == 0, np.nan, ordered / np.where(total == 0, 1.0, total))


def non_inferiority(candidate: np.ndarray, reference: np.ndarray, labels: np.ndarray, mask: np.ndarray,
                    user_ids: np.ndarray, margin: float, samples: int, power: float = 0.8,
                    seed: int = 0) -> NonInferiority:
    """Is `candidate` no worse than `reference` by more than the margin AUC on these events? A paired test
    (both score the same events; one user draw for both): non-inferior when the one-sided 95% lower bound of
    (candidate - reference) lies above -margin; better when it lies above 0.

    The margin is sized to the holdout: at least `margin`, and at least the loss this holdout refuses with
    `power` ((z_0.95 + z_power) standard errors of the paired difference), so a small holdout does not
    refuse every candidate that is not clearly better; both are reported, with the power at the margin.
    The interval is over the resamples whose AUCs are defined (a thin holdout's few positives can all be
    drawn away); the others are counted in `undefined_draws`."""
    users = Users(user_ids)
    a, b = (RankedScores.of(scores, labels, mask, users) for scores in (candidate, reference))
    point = a.auc() - b.auc()
    if not np.isfinite(point):
        raise DataError("the gate's holdout has no positive or no negative label: its AUC is undefined, so no "
                        "candidate can be judged on it (hold out a window with both)")
    drawn, _ = users.resamples(np.random.default_rng(seed), samples)
    draws = a.aucs(drawn) - b.aucs(drawn)
    defined = draws[np.isfinite(draws)]  # a resample that drew no positive (or no negative) has no AUC
    if defined.size < 2:
        raise DataError(f"the gate's holdout is too thin to judge a candidate: {samples - defined.size} of "
                        f"{samples} user resamples drew no positive or no negative label")
    low, high = (float(v) for v in np.percentile(defined, [5.0, 95.0]))
    se = float(np.std(defined, ddof=1))
    z = NormalDist()
    sized = max(margin, (z.inv_cdf(0.95) + z.inv_cdf(power)) * se)
    achieved = z.cdf(sized / se - z.inv_cdf(0.95)) if se > 0 else 1.0
    return NonInferiority(difference=round(point, 6), ci90=(round(low, 6), round(high, 6)), se=round(se, 6),
                          margin=round(sized, 6), margin_configured=margin, power_at_margin=round(achieved, 3),
                          non_inferior=bool(low > -sized), better=bool(low > 0), samples=samples,
                          undefined_draws=samples - defined.size)
