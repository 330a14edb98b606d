"""Transferability and its bootstrap: the guard, and the resampled AUC against the plain one."""

from __future__ import annotations

import numpy as np
import pytest

from recdistill.core import metrics
from recdistill.demo.stats import _Ranked, bootstrap_transferability, transferability

pytestmark = pytest.mark.unit


def test_transferability_is_the_share_of_the_gain_and_undefined_below_the_noise() -> None:
    assert transferability(0.86, 0.84, 0.852, min_gain=0.003) == pytest.approx(0.6)
    assert transferability(0.86, 0.84, 0.83, min_gain=0.003) == pytest.approx(-0.5)
    assert transferability(0.8415, 0.84, 0.845, min_gain=0.003) is None  # gain 0.0015: noise
    assert transferability(0.83, 0.84, 0.85, min_gain=0.003) is None  # the teacher is worse


def test_weighted_auc_of_a_resample_equals_the_auc_of_the_repeated_rows() -> None:
    rng = np.random.default_rng(1)
    labels = np.zeros((300, 5))
    labels[:, 0] = 1
    scores = rng.random((300, 5)) + labels * 0.3
    mask = np.ones_like(labels, dtype=bool)
    ranked = _Ranked.of(scores, labels, mask)
    assert ranked.auc(np.ones(300)) == pytest.approx(metrics.auc(labels, scores))
    counts = rng.multinomial(300, np.full(300, 1 / 300)).astype(float)
    rows = np.repeat(np.arange(300), counts.astype(int))
    assert ranked.auc(counts) == pytest.approx(metrics.auc(labels[rows], scores[rows]))


def test_bootstrap_interval_brackets_the_point_estimate() -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros((2_000, 6))
    labels[:, 0] = 1
    noise = rng.normal(size=labels.shape)
    teacher, baseline = labels * 1.0 + noise, labels * 0.6 + noise + rng.normal(size=labels.shape) * 0.5
    student = labels * 0.8 + noise + rng.normal(size=labels.shape) * 0.3
    point = transferability(metrics.auc(labels, teacher), metrics.auc(labels, baseline), metrics.auc(labels, student),
                            0.003)
    interval = bootstrap_transferability(labels, np.ones_like(labels, dtype=bool), teacher, [baseline], [student],
                                         samples=100, min_gain=0.003)
    assert point is not None
    assert interval["low"] < point < interval["high"]
    assert interval["undefined"] == 0
