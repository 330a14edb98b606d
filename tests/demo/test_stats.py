"""Transferability and its bootstrap: the guard, and the resampled AUC against the plain one."""

from __future__ import annotations

import numpy as np
import pytest

from recdistill.core import metrics
from recdistill.demo.stats import _Ranked, bootstrap_transferability, ratios, std, transferability, user_weights

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


def _scores(rng: np.random.Generator, labels: np.ndarray, signal: float, noise: np.ndarray) -> np.ndarray:
    return labels * signal + noise + rng.normal(size=labels.shape) * 0.5


def test_bootstrap_intervals_bracket_the_point_estimates() -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros((2_000, 6))
    labels[:, 0] = 1
    users = rng.integers(0, 200, 2_000)
    noise = rng.normal(size=labels.shape)
    teacher, baseline = _scores(rng, labels, 1.0, noise), _scores(rng, labels, 0.6, noise)
    student, control = _scores(rng, labels, 0.85, noise), _scores(rng, labels, 0.7, noise)
    auc = {name: metrics.auc(labels, s) for name, s in
           (("teacher", teacher), ("baseline", baseline), ("student", student), ("control", control))}
    raw, attributable = ratios(auc["teacher"], auc["baseline"], auc["student"], {"control": auc["control"]}, 0.003)
    assert raw is not None
    assert attributable is not None
    assert attributable < raw, "a control that helps lowers what the teacher is credited with"
    intervals = bootstrap_transferability(labels, np.ones_like(labels, dtype=bool), users, [teacher], [baseline],
                                          [student], {"control": [control]}, samples=100, min_gain=0.003)
    assert intervals["raw"]["low"] < raw < intervals["raw"]["high"]
    assert intervals["attributable"]["low"] < attributable < intervals["attributable"]["high"]
    assert intervals["raw"]["undefined"] == 0


def test_the_attributable_ratio_never_exceeds_the_raw_one() -> None:
    assert ratios(0.86, 0.84, 0.852, {"self": 0.83}, 0.003) == pytest.approx((0.6, 0.6))  # control below baseline
    assert ratios(0.86, 0.84, 0.852, {"self": 0.846, "smooth": 0.844}, 0.003) == pytest.approx((0.6, 0.3))
    assert ratios(0.8415, 0.84, 0.845, {}, 0.003) == (None, None)


def test_a_user_level_bootstrap_is_wider_when_one_user_dominates() -> None:
    """Events of one user move together: resampling users (not events) must show it. Half the events
    belong to one user whose events all favour the student; the user-level interval is wider."""
    rng = np.random.default_rng(3)
    events = 3_000
    labels = np.zeros((events, 5))
    labels[:, 0] = 1
    users = np.where(np.arange(events) < events // 2, 0, 1 + rng.integers(0, 300, events))
    noise = rng.normal(size=labels.shape)
    teacher, baseline = _scores(rng, labels, 1.0, noise), _scores(rng, labels, 0.5, noise)
    student = _scores(rng, labels, 0.6, noise)
    student[users == 0] += labels[users == 0] * 0.8  # the dominant user's events all favour the student

    def width(user_ids: np.ndarray) -> float:
        interval = bootstrap_transferability(labels, np.ones_like(labels, dtype=bool), user_ids, [teacher],
                                             [baseline], [student], {}, samples=200, min_gain=0.003)["raw"]
        return interval["high"] - interval["low"]

    by_event = width(np.arange(events))  # every event its own cluster: the event-level bootstrap
    by_user = width(users)
    assert by_user > 2 * by_event, (by_user, by_event)


def test_user_weights_draw_whole_users() -> None:
    users = np.array(["a", "a", "a", "b", "c", "c"])
    for seed in range(20):
        weights = user_weights(users, np.random.default_rng(seed))
        draws = {user: set(weights[users == user]) for user in ("a", "b", "c")}
        assert all(len(counts) == 1 for counts in draws.values()), "all events of a user share its draw count"
        assert sum(counts.pop() for counts in draws.values()) == 3, "as many draws as users"


def test_standard_deviations_use_ddof_1() -> None:
    assert std([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert std([1.0]) is None
