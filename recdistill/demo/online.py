"""What the live replay can tell without the test window: the exploration slice as an unbiased evaluation set,
and the A/B test between the baseline (held back) and the distilled versions, both from what clients saw."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill_worker import onnx_scores
from recdistill.core import metrics
from recdistill.core.bootstrap import Users
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.features.encoder import Encoder
from recdistill.core.training import EncodedSplit
from recdistill.demo.live import LiveResult
from recdistill.demo.stats import arm_difference


@dataclass(frozen=True)
class ExplorationSet:
    """The exploration slice's clicks: each request's exposed candidates, label 1 for the one clicked.

    There the order was random, so an item's position says nothing about the item: the position bias of the
    clicks dilutes every model's click AUC alike, and the models compare without it. The worker never
    trained on these requests."""

    split: EncodedSplit  # labels: the clicks; events: the explored requests
    exposed: np.ndarray  # [events, candidates] bool: shown to the user

    @property
    def clicks(self) -> int:
        return int(self.split.labels.sum())

    def auc(self, scores: np.ndarray, mask: np.ndarray) -> float | None:
        shown = mask & self.exposed
        labels = self.split.labels[shown]
        if labels.size == 0 or labels.min() == labels.max():
            return None  # no click, or nothing else shown
        return round(float(metrics.auc(labels, scores[shown])), 6)


def exploration_set(dataset: PreparedDataset, encoder: Encoder, live: LiveResult) -> ExplorationSet | None:
    """The explored requests that were answered (None when there are none)."""
    served = [s for s in live.served if s.policy == "random" and s.error is None]
    if not served:
        return None
    event_ids = np.array([s.event_id for s in served], dtype=np.int64)
    contexts = dataset.contexts(encoder, event_ids, "slate")
    width = max(s.candidates for s in served)
    labels = np.zeros((len(served), width), dtype=np.float32)
    exposed = np.zeros((len(served), width), dtype=bool)
    for row, (s, context) in enumerate(zip(served, contexts, strict=True)):
        if len(context.cand_item) != s.candidates:  # the replay's request and the dataset's slate must agree
            raise RuntimeError(f"event {s.event_id}: {s.candidates} candidates served, {len(context.cand_item)} "
                               "in the prepared slate")
        exposed[row, s.exposed] = True
        labels[row, 0] = float(s.clicked)  # the replay puts the real item first; nothing else is ever clicked
    user_ids = dataset.events["user_id"].to_numpy()[event_ids]
    return ExplorationSet(EncodedSplit(task="slate", event_ids=event_ids, contexts=contexts, labels=labels,
                                       user_ids=user_ids, encoder=encoder), exposed)


def online_ab(live: LiveResult, exposed_positions: int, samples: int) -> dict[str, Any] | None:
    """The A/B test: requests served by the ranking model (not the exploration slice) from the holdback's
    start, split by the arm their user is in; clicks and top-k hits per request, treatment minus control with
    user-level intervals."""
    holdback, started = live.holdback, live.holdback_at_s
    if holdback is None or started is None:
        return None
    served = [s for s in live.served if s.error is None and s.policy == "model" and s.sent_s >= started]
    arms: dict[str, list] = {"control": [], "treatment": []}
    for s in served:
        arms["control" if holdback.holds(s.user_id) else "treatment"].append(s)
    # Requests of a control user that another version answered: sent in the instant the test started.
    mismatched = sum(s.version != holdback.version for s in arms["control"])
    summary: dict[str, Any] = {"control_version": holdback.version, "share_held_back": holdback.share,
                               "started_at_s": round(started, 2), "mismatched_control_requests": mismatched}
    per_arm: dict[str, dict[str, np.ndarray]] = {}
    for arm, rows in arms.items():
        if not rows:
            return summary | {"note": f"no request in the {arm} arm"}
        per_arm[arm] = {
            "users": np.array([s.user_id for s in rows]),
            "click": np.array([s.clicked for s in rows], dtype=np.float64),
            f"real_item_in_top{exposed_positions}": np.array(
                [s.real_item_rank is not None and s.real_item_rank < exposed_positions for s in rows],
                dtype=np.float64),
        }
        summary[arm] = {"requests": len(rows), "users": int(np.unique(per_arm[arm]["users"]).size),
                        "versions": sorted({s.version for s in rows if s.version}),
                        **{k: round(float(v.mean()), 4) for k, v in per_arm[arm].items() if k != "users"}}
    treatment, control = per_arm["treatment"], per_arm["control"]
    summary["treatment_minus_control"] = {
        metric: arm_difference(treatment[metric], treatment["users"], control[metric], control["users"], samples)
        for metric in treatment if metric != "users"}
    for difference in summary["treatment_minus_control"].values():  # what this test could have seen
        difference["detectable_at_80_power"] = _power(difference["low"], difference["high"])
    return summary


def _power(low: float, high: float) -> float:
    """The smallest true difference this interval's precision detects with 80% power (two-sided 5%):
    (1.96 + 0.84) standard errors, the standard error read off the 95% interval's width."""
    return round((1.96 + 0.84) * (high - low) / (2 * 1.96), 4)


def counterfactual_ab(dataset: PreparedDataset, encoder: Encoder, live: LiveResult, registry: Path,
                      exposed_positions: int, samples: int) -> dict[str, Any] | None:
    """The A/B question asked of every request: the replay knows each request's real item and the click
    model (examination 1 / log2(rank + 2) in the top `exposed_positions`), so the control version and the
    treatment version live at that moment both rank every request of the test's stretch (whatever its
    user's arm, the exploration slice included), and each request's expected click under one is paired
    with the other's. The difference is
    averaged over requests with a 95% interval that resamples users. Against the live A/B (different users
    in each arm, sampled clicks), the same question with far less noise."""
    holdback, started = live.holdback, live.holdback_at_s
    if holdback is None or started is None:
        return None
    timeline = sorted((swap.at_s, swap.version) for swap in live.swaps if swap.version != holdback.version)
    served = []
    for s in live.served:
        treatment = next((v for at, v in reversed(timeline) if at <= s.sent_s), None)
        # The exploration slice too: here both versions rank the request anew, whatever order it was served in.
        if s.error is None and s.sent_s >= started and treatment is not None:
            served.append((s, treatment))
    if not served:
        return None
    event_ids = np.array([s.event_id for s, _ in served], dtype=np.int64)
    split = EncodedSplit(task="slate", event_ids=event_ids, contexts=dataset.contexts(encoder, event_ids, "slate"),
                         labels=np.zeros((len(served), max(s.candidates for s, _ in served)), dtype=np.float32),
                         user_ids=dataset.events["user_id"].to_numpy()[event_ids], encoder=encoder)
    scores = {version: onnx_scores(registry / version / "model.onnx", split)
              for version in {holdback.version, *(v for _, v in served)}}

    def expected_click(version: str, row: int) -> float:
        values, mask = scores[version]
        rank = int((values[row][mask[row]] > values[row, 0]).sum())  # the replay puts the real item first
        return 1.0 / math.log2(rank + 2) if rank < exposed_positions else 0.0

    control = np.array([expected_click(holdback.version, row) for row in range(len(served))])
    treatment = np.array([expected_click(version, row) for row, (_, version) in enumerate(served)])
    difference = treatment - control
    rng = np.random.default_rng(0)
    users = Users(split.user_ids)
    draws = [float(np.average(difference, weights=users.weights(rng))) for _ in range(samples)]
    low, high = (float(v) for v in np.percentile(draws, [2.5, 97.5]))
    return {"requests": len(served), "users": users.count,
            "control_version": holdback.version, "treatment_versions": sorted({v for _, v in served}),
            "control_expected_click": round(float(control.mean()), 4),
            "treatment_expected_click": round(float(treatment.mean()), 4),
            "treatment_minus_control": {"difference": round(float(difference.mean()), 4), "low": round(low, 4),
                                        "high": round(high, 4), "samples": samples,
                                        "resamples": "users, each request paired across the arms",
                                        "detectable_at_80_power": _power(low, high)}}
