from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import ndcg_score, roc_auc_score

from recdistill.core import metrics

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("seed", range(5))
def test_auc_and_log_loss_agree_with_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 2_000)
    scores = np.round(rng.random(2_000), 2)  # rounding creates ties
    assert metrics.auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert metrics.log_loss(labels, scores) == pytest.approx(sk_log_loss(labels, np.clip(scores, 1e-7, 1 - 1e-7)))


def test_gauc_is_impression_weighted_per_user_auc_over_users_with_both_classes() -> None:
    rng = np.random.default_rng(7)
    groups = rng.integers(0, 40, 3_000)
    labels = rng.integers(0, 2, 3_000)
    labels[groups == 0] = 1  # a user with one class only is skipped
    scores = rng.random(3_000)
    expected_total, expected_weight = 0.0, 0
    for group in np.unique(groups):
        rows = groups == group
        if len(np.unique(labels[rows])) == 2:
            expected_total += roc_auc_score(labels[rows], scores[rows]) * rows.sum()
            expected_weight += rows.sum()
    assert metrics.gauc(labels, scores, groups) == pytest.approx(expected_total / expected_weight)


@pytest.mark.parametrize("seed", range(20))
def test_gauc_is_the_group_by_group_auc_to_the_last_bit(seed: int) -> None:
    """One sort for all groups must give what `auc` gives group by group, added in ascending group order: ties
    (rounded scores), one-class groups, a group with a NaN score (its AUC is NaN: skipped), string ids."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 4_000))
    groups = np.array([f"user-{g}" for g in rng.integers(0, int(rng.integers(1, 200)), n)], dtype=object)
    labels = (rng.random(n) < rng.random()).astype(np.float32)
    scores = np.round(rng.random(n), int(rng.integers(1, 4))).astype(np.float32)
    scores[rng.integers(0, n)] = np.nan
    total, weight = 0.0, 0
    for group in sorted(set(groups)):
        rows = groups == group
        value = metrics.auc(labels[rows], scores[rows])
        if not np.isnan(value):
            total, weight = total + value * int(rows.sum()), weight + int(rows.sum())
    expected = total / weight if weight else float("nan")
    got = metrics.gauc(labels, scores, groups)
    assert got == expected or (np.isnan(got) and np.isnan(expected))


def test_ece_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(3)
    probabilities = rng.random(5_000)
    labels = (rng.random(5_000) < probabilities**2).astype(int)
    bins = np.minimum((probabilities * 10).astype(int), 9)
    expected = sum(
        (bins == b).sum() * abs(probabilities[bins == b].mean() - labels[bins == b].mean()) for b in range(10)
    ) / 5_000
    assert metrics.ece(labels, probabilities, bins=10) == pytest.approx(expected)
    assert metrics.ece(labels, probabilities**2, bins=10) < metrics.ece(labels, probabilities, bins=10)


def test_ndcg_agrees_with_sklearn() -> None:
    rng = np.random.default_rng(5)
    labels = np.zeros((200, 21))
    labels[np.arange(200), rng.integers(0, 21, 200)] = 1
    scores = rng.random((200, 21))
    assert metrics.ndcg_at_k(labels, scores, 10) == pytest.approx(ndcg_score(labels, scores, k=10))


def test_auc_with_one_class_is_nan() -> None:
    assert np.isnan(metrics.auc(np.ones(10), np.random.default_rng(0).random(10)))
