"""Ranking and calibration metrics: AUC, GAUC, log loss, ECE, NDCG@k (numpy, no sklearn at run time)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

_EPS = 1e-7


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with midranks for ties); NaN if only one class."""
    labels = np.asarray(labels, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives = labels > 0.5
    n_pos = int(positives.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Impression-weighted mean of per-group AUC over groups (users) that have both classes.

    One sort for every group (by group, then score) instead of one rank per group: the midranks, rank sums and
    per-group AUCs are the same numbers `auc` computes group by group (exact halves, exact sums), and they are
    added up in the same order (groups ascending), so the result is the same to the last bit."""
    labels, groups = (np.asarray(a).ravel() for a in (labels, groups))
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.size == 0:
        return float("nan")
    codes = np.unique(groups, return_inverse=True)[1].ravel()
    order = np.lexsort((scores, codes))
    group, score = codes[order], scores[order]
    first_of_group = np.r_[True, group[1:] != group[:-1]]
    first_of_tie = first_of_group | np.r_[True, score[1:] != score[:-1]]
    position = np.arange(group.size) - np.flatnonzero(first_of_group)[np.cumsum(first_of_group) - 1]
    tie_starts = np.flatnonzero(first_of_tie)
    tie_lengths = np.diff(np.r_[tie_starts, group.size])
    ranks = (position[tie_starts] + (tie_lengths + 1) / 2)[np.cumsum(first_of_tie) - 1]  # 1-based midranks
    positive = np.asarray(labels, dtype=np.float64)[order] > 0.5
    size = np.bincount(group)
    n_pos = np.bincount(group, weights=positive).astype(np.int64)
    n_neg = size - n_pos
    rank_sum = np.bincount(group, weights=np.where(positive, ranks, 0.0))
    undefined = np.bincount(group, weights=np.isnan(score)) > 0  # `auc` of a group with a NaN score is NaN
    total, weight = 0.0, 0
    for g in np.flatnonzero((n_pos > 0) & (n_neg > 0) & ~undefined):
        p, n = int(n_pos[g]), int(n_neg[g])
        total += float((rank_sum[g] - p * (p + 1) / 2) / (p * n)) * int(size[g])
        weight += int(size[g])
    return total / weight if weight else float("nan")


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probabilities, dtype=np.float64).ravel(), _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def calibration_bins(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: mean predicted probability, observed positive rate, count."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(index, weights=p, minlength=bins) / counts
        rate = np.bincount(index, weights=y, minlength=bins) / counts
    return mean_p, rate, counts


def ece(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error with equal-width bins."""
    mean_p, rate, counts = calibration_bins(labels, probabilities, bins)
    filled = counts > 0
    return float(np.sum(counts[filled] * np.abs(mean_p[filled] - rate[filled])) / counts.sum())


def ndcg_at_k(labels: np.ndarray, scores: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over rows of [queries, candidates] arrays (binary or graded labels)."""
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    k = min(k, labels.shape[1])
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    dcg = (np.take_along_axis(labels, order, axis=1) * discounts).sum(axis=1)
    ideal = (-np.sort(-labels, axis=1)[:, :k] * discounts).sum(axis=1)
    valid = ideal > 0
    return float(np.mean(dcg[valid] / ideal[valid])) if valid.any() else float("nan")
