"""Transferability and its bootstrap: paired seeds, every draw kept, the ratio defined by the gain's
interval, padded slates, and the resampled AUC against the plain one."""

from __future__ import annotations

import numpy as np
import pytest

from recdistill.core import metrics
from recdistill.core.bootstrap import RankedScores, Users
from recdistill.demo.stats import by_history_length, interval, std, transferability_figures

pytestmark = pytest.mark.unit


def test_weighted_auc_of_a_resample_equals_the_auc_of_the_repeated_rows() -> None:
    rng = np.random.default_rng(1)
    labels = np.zeros((300, 5))
    labels[:, 0] = 1
    scores = rng.random((300, 5)) + labels * 0.3
    mask = np.ones_like(labels, dtype=bool)
    users = rng.integers(0, 40, 300)
    ranked = RankedScores.of(scores, labels, mask, Users(users))
    assert ranked.pairs is not None, "40 users: the per-user pair matrix"
    assert ranked.auc() == pytest.approx(metrics.auc(labels, scores))
    counts = rng.multinomial(40, np.full(40, 1 / 40))
    rows = np.concatenate([np.flatnonzero(users == user) for user in range(40) for _ in range(counts[user])])
    assert ranked.auc(counts) == pytest.approx(metrics.auc(labels[rows], scores[rows]))


def test_the_pair_matrix_and_the_sorted_candidates_give_the_same_resampled_auc() -> None:
    rng = np.random.default_rng(2)
    labels = np.zeros((400, 6))
    labels[:, 0] = 1
    scores = np.round(rng.random((400, 6)) + labels * 0.2, 1)  # ties, broken by the candidates' order
    mask = rng.random((400, 6)) > 0.2
    few, many = rng.integers(0, 30, 400), np.arange(400)
    matrix, rows = RankedScores.of(scores, labels, mask, Users(few)), RankedScores.of(scores, labels, mask, Users(many))
    assert matrix.pairs is not None
    assert rows.pairs is None, "400 users of one event each: the sorted candidates"
    assert matrix.auc() == pytest.approx(rows.auc(), abs=1e-12)
    for seed in range(5):
        users = Users(few)
        draws = users.draws(np.random.default_rng(seed))
        assert matrix.auc(draws) == pytest.approx(rows.auc(draws[users.of_row]), abs=1e-12)


@pytest.mark.parametrize("user_count", [30, 400], ids=["pair matrix", "sorted candidates"])
def test_all_resamples_at_once_give_each_resamples_own_auc_to_the_last_bit(user_count: int) -> None:
    """`aucs` scores every resample of an interval in one product: each must be the plain AUC of that resample's
    repeated rows, exactly (whole-number counts: no rounding anywhere), and a resample without a positive is
    NaN in its own row only."""
    rng = np.random.default_rng(4)
    labels = np.zeros((400, 6))
    labels[rng.random(400) < 0.9, 0] = 1
    scores = rng.random((400, 6)) + labels * 0.2  # no ties: the plain AUC and the pair count agree exactly
    mask = np.ones_like(labels, dtype=bool)
    ids = rng.integers(0, user_count, 400) if user_count < 400 else np.arange(400)
    labels[ids == ids.min()] = 0  # the first user (in sorted id order) has no positive
    users = Users(ids)
    ranked = RankedScores.of(scores, labels, mask, users)
    assert (ranked.pairs is not None) == (user_count == 30)
    drawn, (picks,) = users.resamples(np.random.default_rng(0), 6, 3)
    replay = np.random.default_rng(0)  # the same stream, drawn one resample at a time
    for row in range(6):
        assert np.array_equal(drawn[row], users.draws(replay))
        assert np.array_equal(picks[row], replay.integers(3, size=3))
    drawn[5] = 0
    drawn[5, 0] = users.count  # the user without a positive, drawn every time
    aucs = ranked.aucs(drawn)
    for row in range(5):
        rows = np.concatenate([np.flatnonzero(users.of_row == u) for u in range(users.count) for _ in
                               range(int(drawn[row, u]))])
        assert aucs[row] == metrics.auc(labels[rows], scores[rows])
    assert np.isnan(aucs[5])


def _scores(rng: np.random.Generator, labels: np.ndarray, signal: float, noise: np.ndarray) -> np.ndarray:
    return labels * signal + noise + rng.normal(size=labels.shape) * 0.5


def _holdout(seed: int = 0, events: int = 3_000, users: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.zeros((events, 6))
    labels[:, 0] = 1
    return labels, rng.integers(0, users, events), rng.normal(size=labels.shape)


def test_a_known_attributable_share_is_recovered_with_an_interval_around_it() -> None:
    """Scores built so that the method recovers more than the control: the point estimates are the
    ratios of AUCs computed independently (`metrics.auc`), and the intervals hold them."""
    labels, users, noise = _holdout()
    rng = np.random.default_rng(1)
    mask = np.ones_like(labels, dtype=bool)
    seeds = 3
    teacher = [_scores(rng, labels, 1.2, noise)]
    baseline = [_scores(rng, labels, 0.6, noise) for _ in range(seeds)]
    method = [_scores(rng, labels, 1.0, noise) for _ in range(seeds)]
    control = [_scores(rng, labels, 0.75, noise) for _ in range(seeds)]
    auc = {name: float(np.mean([metrics.auc(labels, s) for s in runs]))
           for name, runs in (("teacher", teacher), ("baseline", baseline), ("method", method), ("control", control))}
    expected_raw = (auc["method"] - auc["baseline"]) / (auc["teacher"] - auc["baseline"])
    expected_attributable = (auc["method"] - auc["control"]) / (auc["teacher"] - auc["baseline"])
    assert 0.2 < expected_attributable < expected_raw - 0.1, "the fixture: a control helps, the method more"
    figures = transferability_figures(labels, mask, users, teacher, baseline, method, {"control": control},
                                      samples=400)
    assert figures["ratio_defined"]
    assert figures["transferability"] == pytest.approx(expected_raw, abs=1e-4)
    assert figures["transferability_attributable"] == pytest.approx(expected_attributable, abs=1e-4)
    assert figures["attributable_gain_auc"] == pytest.approx(auc["method"] - auc["control"], abs=1e-6)
    assert figures["best_control"] == "control"
    for key, point in (("transferability", expected_raw), ("transferability_attributable", expected_attributable),
                       ("attributable_gain_auc", auc["method"] - auc["control"])):
        ci = figures[f"{key}_ci95"]
        assert ci["low"] < point < ci["high"], (key, ci)
    assert figures["attributable_gain_auc_ci95"]["low"] > 0
    assert (figures["undefined_draws"], figures["bootstrap_resamples"]) == (0, 400)


def test_a_gain_whose_interval_crosses_zero_defines_no_ratio_and_keeps_every_draw() -> None:
    """The teacher is the baseline's equal: its gain's interval holds 0, so no ratio is reported, yet the
    draws where the gain is at or below 0 are counted (not dropped), and the gains keep their intervals."""
    labels, users, noise = _holdout(2)
    rng = np.random.default_rng(3)
    mask = np.ones_like(labels, dtype=bool)
    baseline = [_scores(rng, labels, 0.6, noise) for _ in range(2)]
    teacher = [_scores(rng, labels, 0.6, noise)]
    method = [_scores(rng, labels, 0.62, noise) for _ in range(2)]
    figures = transferability_figures(labels, mask, users, teacher, baseline, method, {}, samples=400)
    gain = figures["teacher_gain_auc_ci95"]
    assert gain["low"] <= 0 <= gain["high"]
    assert not figures["ratio_defined"]
    assert figures["transferability"] is None
    assert figures["transferability_ci95"] is None
    assert 0 < figures["undefined_draws"] < 400, "draws with a gain at or below 0 are counted, not dropped"
    assert figures["attributable_gain_auc_ci95"]["low"] is not None, "the gain in AUC is always reported"


def test_unbounded_draws_widen_the_interval_instead_of_vanishing() -> None:
    draws = [0.4, 0.5, 0.6] * 30 + [float("inf")] * 5
    ci = interval(draws)
    assert ci["high"] is None
    assert ci["high_unbounded"]
    assert ci["low"] == 0.4
    assert not ci["low_unbounded"]


def test_padded_slates_count_only_their_real_candidates() -> None:
    """Slates of unequal length are padded (label -1, masked out): the figures equal those of the same
    events without the padding, in the point estimate and in every draw (the bootstrap once ignored the
    mask)."""
    labels, users, noise = _holdout(4, events=1_000, users=100)
    rng = np.random.default_rng(5)
    runs = {name: _scores(rng, labels, signal, noise) for name, signal in
            (("teacher", 1.2), ("baseline", 0.5), ("method", 0.9))}
    padded_labels = np.concatenate([labels, -np.ones((labels.shape[0], 4))], axis=1)
    padded = {name: np.concatenate([s, np.full((s.shape[0], 4), 10.0)], axis=1) for name, s in runs.items()}
    plain = transferability_figures(labels, np.ones_like(labels, dtype=bool), users, [runs["teacher"]],
                                    [runs["baseline"]], [runs["method"]], {}, samples=50)
    masked = transferability_figures(padded_labels, padded_labels >= 0, users, [padded["teacher"]],
                                     [padded["baseline"]], [padded["method"]], {}, samples=50)
    assert masked == plain


def test_every_variant_must_run_on_the_methods_seeds() -> None:
    labels, users, noise = _holdout(6, events=200, users=20)
    one = [noise]
    with pytest.raises(ValueError, match="paired"):
        transferability_figures(labels, np.ones_like(labels, dtype=bool), users, one, one * 2, one * 2,
                                {"control": one}, samples=10)


def test_history_buckets_split_the_events_and_name_their_users() -> None:
    labels, users, noise = _holdout(7, events=1_200, users=120)
    rng = np.random.default_rng(8)
    history = rng.integers(0, 3_000, labels.shape[0])
    teacher, baseline, method = (_scores(rng, labels, s, noise) for s in (1.2, 0.5, 0.9))
    buckets = by_history_length(history, labels, np.ones_like(labels, dtype=bool), users, [teacher], [baseline],
                                [method], {}, samples=20)
    assert [b["history_events"] for b in buckets] == ["0-9", "10-99", "100-999", "1000+"]
    assert sum(b["events"] for b in buckets) == labels.shape[0]
    low = buckets[0]
    rows = history < 10
    assert low["users"] == np.unique(users[rows]).size
    assert low["aucs"]["teacher"] == pytest.approx(metrics.auc(labels[rows], teacher[rows]), abs=1e-6)


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
        ci = transferability_figures(labels, np.ones_like(labels, dtype=bool), user_ids, [teacher], [baseline],
                                     [student], {}, samples=200)["transferability_ci95"]
        return ci["high"] - ci["low"]

    by_event = width(np.arange(events))  # every event its own cluster: the event-level bootstrap
    by_user = width(users)
    assert by_user > 2 * by_event, (by_user, by_event)


def test_a_resample_draws_whole_users() -> None:
    users = np.array(["a", "a", "a", "b", "c", "c"])
    for seed in range(20):
        weights = Users(users).weights(np.random.default_rng(seed))
        draws = {user: set(weights[users == user]) for user in ("a", "b", "c")}
        assert all(len(counts) == 1 for counts in draws.values()), "all events of a user share its draw count"
        assert sum(counts.pop() for counts in draws.values()) == 3, "as many draws as users"
        by_user = Users(users).draws(np.random.default_rng(seed))
        assert [weights[users == user][0] for user in ("a", "b", "c")] == list(by_user), "the same resample"


def test_standard_deviations_use_ddof_1() -> None:
    assert std([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert std([1.0]) is None


@pytest.mark.parametrize("users", [np.repeat(np.arange(3), 4), np.arange(12)],
                         ids=["pair matrix", "sorted candidates"])
def test_a_resample_without_a_positive_has_no_auc_instead_of_an_error(users: np.ndarray) -> None:
    """A few users' clicks (the exploration slice of a short replay): a resample that draws only users without
    a click has no AUC (NaN, as the row-weighted AUC gave it), and does not stop the report."""
    labels = np.zeros((12, 2))
    labels[0, 0] = 1  # one click, by the first user
    scores = np.random.default_rng(3).random((12, 2))
    ranked = RankedScores.of(scores, labels, np.ones_like(labels, dtype=bool), Users(users))
    assert (ranked.pairs is not None) == (users.size != np.unique(users).size)
    assert ranked.auc() == pytest.approx(metrics.auc(labels, scores))
    without_the_clicker = np.ones(ranked.positives.size)
    without_the_clicker[0] = 0
    assert np.isnan(ranked.auc(without_the_clicker))
