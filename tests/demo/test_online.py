"""The replay's online evaluations: the hidden logging policy, the A/B test's arms and the paired intervals."""

from __future__ import annotations

import numpy as np

from recdistill.core.contracts.registry import Holdback
from recdistill.core.data.dataset import PreparedDataset
from recdistill.demo.live import LiveResult
from recdistill.demo.logging_policy import MAINSTREAM, NICHE, target_popularity, traffic_sources
from recdistill.demo.online import online_ab
from recdistill.demo.replay import Served
from recdistill.demo.stats import arm_difference, auc_difference


def test_the_traffic_source_follows_the_hidden_intent_and_no_request_carries_it(ml100k: PreparedDataset) -> None:
    events = ml100k.split("valid", "slate")[:2_000]
    sources = traffic_sources(ml100k, events)
    popularity = dict(zip(events.tolist(), target_popularity(ml100k, events), strict=True))
    niche = [popularity[e] for e, s in sources.items() if s == NICHE]
    mainstream = [popularity[e] for e, s in sources.items() if s == MAINSTREAM]
    assert 0.3 < len(niche) / len(events) < 0.7
    assert max(niche) <= min(mainstream), "search traffic is the users after the less popular items"
    body = ml100k.to_request(int(events[0]), "slate")
    assert NICHE not in str(body)
    assert MAINSTREAM not in str(body)


def _served(user: str, version: str, sent_s: float, clicked: bool, policy: str = "model") -> Served:
    return Served(sent_s=sent_s, latency_ms=1.0, protocol="http", version=version, real_item_rank=0 if clicked else 30,
                  clicked=clicked, user_id=user, policy=policy)


def test_the_ab_test_splits_requests_by_the_users_arm_from_its_start() -> None:
    holdback = Holdback(version="base", share=0.5, salt="t")
    users = [str(u) for u in range(200)]
    served = [_served(u, "base", 0.5, True) for u in users]  # before the test: left out
    for u in users:
        held = holdback.holds(u)
        served.append(_served(u, "base" if held else "new", 2.0, clicked=not held))  # treatment always clicks
        served.append(_served(u, "new", 2.5, False, policy="random"))  # the exploration slice: left out
    live = LiveResult(served=served, swaps=[], holdback=holdback, holdback_at_s=1.0, refused=0, stream_state={},
                      feedback_errors=0, duration_s=3.0)
    ab = online_ab(live, exposed_positions=10, samples=100)
    assert ab is not None
    held = sum(holdback.holds(u) for u in users)
    assert (ab["control"]["requests"], ab["treatment"]["requests"]) == (held, len(users) - held)
    assert ab["control"]["versions"] == ["base"]
    assert ab["treatment"]["versions"] == ["new"]
    assert ab["mismatched_control_requests"] == 0
    assert ab["treatment_minus_control"]["click"]["difference"] == 1.0
    no_test = LiveResult(served=served, swaps=[], holdback=None, holdback_at_s=None, refused=0, stream_state={},
                         feedback_errors=0, duration_s=3.0)
    assert online_ab(no_test, exposed_positions=10, samples=10) is None


def test_arm_differences_resample_users_and_see_a_real_shift() -> None:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(100), 20)
    same = arm_difference(rng.random(2_000), users, rng.random(2_000), users + 100, samples=200)
    assert same["low"] < 0 < same["high"]
    shifted = arm_difference(rng.random(2_000) + 0.2, users, rng.random(2_000), users + 100, samples=200)
    assert 0.1 < shifted["low"] <= shifted["difference"] <= shifted["high"] < 0.3


def test_a_paired_auc_difference_is_zero_for_the_same_model_and_positive_for_a_better_one() -> None:
    rng = np.random.default_rng(1)
    labels = np.zeros((400, 5), dtype=np.float32)
    labels[:, 0] = 1
    mask = np.ones(labels.shape, dtype=bool)
    users = np.repeat(np.arange(40), 10)
    noise = rng.random(labels.shape)
    better = noise + 0.5 * labels
    same = auc_difference(labels, mask, users, [noise, noise], [noise, noise], samples=100)
    assert same["difference"] == same["low"] == same["high"] == 0.0
    gain = auc_difference(labels, mask, users, [better], [noise], samples=100)
    assert 0 < gain["low"] <= gain["difference"] <= gain["high"]
