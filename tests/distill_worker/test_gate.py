"""The promotion gate cannot slide: each candidate is held to the active version and to a fixed anchor by
a paired, user-level non-inferiority test, so losses within the margin cannot add up over promotions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distill_worker.promote import publish_and_promote, quality_decision
from distill_worker.settings import GateConfig, WorkerSettings
from distill_worker.student import StudentConfig, StudentModel
from recdistill.core import metrics
from recdistill.core.artifact import read_anchor
from recdistill.core.bootstrap import non_inferiority
from recdistill.core.contracts.worker import DataWindow
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.errors import DataError
from recdistill.core.features.encoder import Encoder
from recdistill.core.training import EncodedSplit

pytestmark = pytest.mark.unit


def _holdout(ml100k: PreparedDataset, events: int = 2_000) -> EncodedSplit:
    return EncodedSplit.build(ml100k, Encoder(ml100k.schema, "student"), "valid", "slate", limit=events)


def test_a_slow_slide_is_refused_once_its_drops_add_up_past_the_margin(ml100k: PreparedDataset) -> None:
    """Candidates each a little worse than the last (steps well inside the margin): against the active
    version alone every one passes, so the losses add up; held to the anchor too, the slide stops before
    it has lost more than the margin."""
    holdout = _holdout(ml100k)
    labels = holdout.labels
    positive = (labels > 0.5).astype(np.float64)
    noise = np.random.default_rng(0).normal(size=labels.shape)
    config = GateConfig(auc_tolerance=0.002, bootstrap_samples=300)

    def candidate(step: int) -> np.ndarray:  # the same noise: only the signal shrinks, step by step
        return positive * (1.0 - 0.003 * step) + noise

    def auc(scores: np.ndarray) -> float:
        return metrics.auc(labels[labels >= 0], scores[labels >= 0])

    anchor = active = candidate(0)
    served, active_only = [0], []
    for step in range(1, 10):
        scores = candidate(step)
        alone = quality_decision(scores, {"active": candidate(step - 1)}, holdout, config)["active"]
        active_only.append(alone.non_inferior)
        decisions = quality_decision(scores, {"active": active, "anchor": anchor}, holdout, config)
        assert decisions["anchor"].ci90[0] <= decisions["anchor"].difference <= decisions["anchor"].ci90[1]
        if all(d.non_inferior for d in decisions.values()):
            active = scores
            served.append(step)
    drops = [auc(candidate(s)) - auc(candidate(s + 1)) for s in range(9)]
    assert max(drops) < config.auc_tolerance / 2, "each step alone is well within the margin"
    assert all(active_only), "compared with the active version only, the whole slide is promoted"
    assert auc(anchor) - auc(candidate(9)) > 2 * config.auc_tolerance, "the slide adds up past the margin"
    assert served[-1] < 9, "held to the anchor, the slide stops"
    assert auc(anchor) - auc(candidate(served[-1])) <= config.auc_tolerance, "no served version lost the margin"
    assert auc(anchor) - auc(candidate(served[-1] + 1)) > config.auc_tolerance / 2


def test_the_batch_version_anchors_and_only_a_significantly_better_one_moves_it(
        ml100k: PreparedDataset, tmp_path: Path) -> None:
    holdout = _holdout(ml100k, 1_000)
    settings = WorkerSettings(data=ml100k.directory, registry=tmp_path / "registry", state_dir=tmp_path / "state",
                              gate=GateConfig(bootstrap_samples=100))
    torch.manual_seed(0)
    model = StudentModel(ml100k.schema, StudentConfig()).eval()
    first = publish_and_promote(settings, model, holdout, DataWindow(), {}, anchor=True).version
    assert first is not None
    anchor = read_anchor(settings.registry)
    assert anchor is not None
    assert (anchor.version, anchor.reason) == (first, "batch version")
    again = publish_and_promote(settings, model, holdout, DataWindow(), {})  # the same model: equal, not better
    assert again.version is not None
    assert not again.anchored
    decision = again.gate.metrics.quality["anchor"]
    assert decision.version == first
    assert decision.difference == 0.0
    assert decision.non_inferior
    assert not decision.better
    assert 0 < decision.power_at_margin <= 1
    assert read_anchor(settings.registry).version == first, "an equal version does not move the anchor"


def test_the_gate_never_runs_without_its_anchor(ml100k: PreparedDataset, tmp_path: Path) -> None:
    """Deleting gate-anchor.json used to let the next candidates be held to the active version only, and the
    next one became the anchor as "first version"; deleting the anchor version's directory did the same."""
    import shutil

    holdout = _holdout(ml100k, 1_000)
    settings = WorkerSettings(data=ml100k.directory, registry=tmp_path / "registry", state_dir=tmp_path / "state",
                              gate=GateConfig(bootstrap_samples=100))
    torch.manual_seed(0)
    model = StudentModel(ml100k.schema, StudentConfig()).eval()
    first = publish_and_promote(settings, model, holdout, DataWindow(), {}, anchor=True).version
    assert first is not None
    second = publish_and_promote(settings, model, holdout, DataWindow(), {})  # equal: the anchor stays
    assert (second.version, second.anchored) != (None, True)
    (settings.registry / "gate-anchor.json").unlink()
    third = publish_and_promote(settings, model, holdout, DataWindow(), {})
    assert third.gate.metrics.quality["anchor"].version == first, "rebuilt from the manifests"
    assert not third.anchored
    rebuilt = read_anchor(settings.registry)
    assert rebuilt is not None
    assert rebuilt.version == first
    assert "rebuilt" in rebuilt.reason
    shutil.rmtree(settings.registry / first)  # the anchor version gone by hand: promotion stops, by reason
    refused = publish_and_promote(settings, model, holdout, DataWindow(), {})
    assert refused.version is None
    assert any(f"anchor version {first} is not in the registry" in r for r in refused.gate.reasons)


def _thin_holdout(clicking_users: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Impressions (one candidate an event) of 6 users, 5 each, where only `clicking_users` clicked once:
    about 9% of user resamples draw none of them when two did."""
    user_ids = np.repeat(np.arange(6), 5)
    labels = np.zeros((30, 1))
    labels[np.arange(clicking_users) * 5, 0] = 1.0
    return labels, labels >= 0, user_ids


def test_a_thin_holdout_judges_over_the_resamples_that_have_an_auc_and_counts_the_others() -> None:
    """A resample that drew no clicking user has no AUC; it is counted, not let turn the interval into NaN
    (which refused every candidate, even one scoring exactly as the active version)."""
    labels, mask, user_ids = _thin_holdout(clicking_users=2)
    scores = np.random.default_rng(0).random((30, 1))
    decision = non_inferiority(scores, scores.copy(), labels, mask, user_ids, margin=0.01, samples=400)
    assert 0 < decision.undefined_draws < 100
    assert decision.ci90 == (0.0, 0.0)
    assert decision.non_inferior
    assert not decision.better


def test_a_holdout_without_a_click_is_refused_by_name_not_judged() -> None:
    labels, mask, user_ids = _thin_holdout(clicking_users=0)
    scores = np.random.default_rng(0).random((30, 1))
    with pytest.raises(DataError, match="no positive or no negative"):
        non_inferiority(scores, scores.copy(), labels, mask, user_ids, margin=0.01, samples=400)
