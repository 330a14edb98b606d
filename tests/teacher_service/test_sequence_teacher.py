"""The sequence teacher family: a causal transformer trained over every position of a user's sequence in
one pass, served by the real Triton behind today's contract, with clear errors for a device or a size
the machine does not have."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recdistill.cli import app
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.errors import DataError
from recdistill.core.features.encoder import Encoder
from recdistill.core.metrics import auc
from recdistill.core.training import EncodedSplit, evaluate_split
from teacher_service.checkpoint import load_checkpoint
from teacher_service.client import score
from teacher_service.device import resolve_device
from teacher_service.launcher import teacher_process
from teacher_service.sequence import SEQUENCE_SIZES, UNSTACKED, SequenceConfig, SequenceTeacher, fit_stack
from teacher_service.sequence_train import check_memory
from teacher_service.train import TeacherTrainConfig, train_teacher

pytestmark = pytest.mark.integration


def _tensors(dataset: PreparedDataset, count: int = 16) -> dict[str, torch.Tensor]:
    encoder = Encoder(dataset.schema, "teacher")
    events = dataset.split("test", "slate")[:count]
    tensors, _ = encoder.assemble(dataset.contexts(encoder, events, "slate"))
    return {k: torch.from_numpy(v) for k, v in tensors.items()}


def test_the_state_after_an_event_never_sees_a_later_one(ml100k: PreparedDataset) -> None:
    torch.manual_seed(0)
    model = SequenceTeacher(ml100k.schema, SequenceConfig(dim=32, layers=2, heads=2, dropout=0.0)).eval()
    items = torch.randint(2, 500, (2, 30))
    gaps = torch.rand(2, 30) * 10
    lengths = torch.tensor([30, 30])
    later = items.clone()
    later[:, 20:] = torch.randint(2, 500, (2, 10))
    with torch.no_grad():
        before = model.states(items, None, None, gaps, lengths)
        after = model.states(later, None, None, gaps, lengths)
    # Position buckets count from the last event, the same in both; what differs is only later items.
    torch.testing.assert_close(before[:, :20], after[:, :20])
    assert not torch.allclose(before[:, 20:], after[:, 20:])


def test_serving_reads_any_history_length_and_a_limit_reads_only_the_recent_events(ml100k: PreparedDataset) -> None:
    torch.manual_seed(0)
    x = _tensors(ml100k)
    full = SequenceTeacher(ml100k.schema, SequenceConfig(dim=32, layers=1, heads=1, dropout=0.0)).eval()
    limited = SequenceTeacher(ml100k.schema, SequenceConfig(dim=32, layers=1, heads=1, dropout=0.0,
                                                            history_limit=10)).eval()
    limited.load_state_dict(full.state_dict())
    lengths = (x["hist_item"] > 0).sum(1)
    recent = {k: v.clone() for k, v in x.items()}
    for name in ("hist_item", "hist_action", "hist_recency"):  # the last 10 events, left-aligned
        cut = torch.zeros_like(x[name])
        for row, n in enumerate(lengths.tolist()):
            cut[row, : min(n, 10)] = x[name][row, max(0, n - 10): n]
        recent[name] = cut
    with torch.no_grad():
        probabilities = full(**x)
        torch.testing.assert_close(limited(**x), full(**recent))
        empty = full(**{k: (v[:, :1] * 0 if k.startswith("hist_") and k != "hist_length" else v) for k, v in x.items()})
    assert probabilities.shape == x["cand_item"].shape
    assert torch.all((probabilities > 0) & (probabilities < 1))
    assert torch.isfinite(empty).all(), "an empty history is scored too"


@pytest.fixture(scope="module")
def sequence_teacher(ml100k: PreparedDataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sequence") / "checkpoint"
    manifest = train_teacher(ml100k.directory, out, TeacherTrainConfig(
        task="slate", size="seq-xs", epochs=6, lr=5e-3, windows_per_batch=8, holdout_events=1_000, device="auto"))
    return out, manifest


def test_one_pass_over_every_position_learns_the_next_item(sequence_teacher: tuple[Path, dict]) -> None:
    _, manifest = sequence_teacher
    assert manifest.family == "sequence"
    history = manifest.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert manifest.valid["auc"] > 0.65, manifest.valid
    assert manifest.test["auc"] > 0.6
    assert all(row["tokens_per_s"] > 0 for row in history)
    # MovieLens slates hold no candidate the user rated before: the match count has nothing to add, so the stack
    # fitted on valid cannot lift its AUC and the identity is kept.
    assert manifest.stack is not None
    assert not manifest.stack.kept
    assert manifest.stack.weights == UNSTACKED


def test_the_manifests_valid_metrics_are_what_the_saved_teacher_scores_on_valid(
        sequence_teacher: tuple[Path, dict], ml100k: PreparedDataset) -> None:
    """Valid's metrics come from the stack's pass over valid (no second pass): the saved model scores the same."""
    checkpoint, manifest = sequence_teacher
    model, _, _ = load_checkpoint(checkpoint)
    valid = EncodedSplit.build(ml100k, Encoder(ml100k.schema, "teacher"), "valid", "slate", exclude_last=1_000)
    with torch.inference_mode():
        again = evaluate_split(lambda inputs: model(**inputs), valid)
    assert again.keys() == manifest.valid.keys()
    for key, value in again.items():
        assert value == pytest.approx(manifest.valid[key], abs=1e-5), key


class _Scored(SequenceTeacher):
    """A sequence teacher whose unstacked score and matches are given as inputs (the stack's fit alone)."""

    def unstacked(self, **x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x["score"], x["matches"]


class _Split:
    """What `fit_stack` reads of a valid split: its batches (inputs, candidate mask, rows) and its labels."""

    def __init__(self, score: np.ndarray, matches: np.ndarray, labels: np.ndarray) -> None:
        self.inputs = {"score": torch.from_numpy(score), "matches": torch.from_numpy(matches)}
        self.labels = labels

    def batches(self, batch_size: int) -> Iterator[SimpleNamespace]:
        for start in range(0, len(self.labels), batch_size):
            rows = np.arange(start, min(start + batch_size, len(self.labels)))
            yield SimpleNamespace(inputs={k: v[rows] for k, v in self.inputs.items()}, rows=rows,
                                  mask=torch.from_numpy(self.labels[rows] >= 0))


@pytest.mark.parametrize("signal", ["matches", "score"])
def test_the_stack_is_fitted_on_valid_and_kept_only_where_it_lifts_valid_auc(
        ml100k: PreparedDataset, signal: str) -> None:
    rng = np.random.default_rng(0)
    score = rng.normal(size=(4_000, 8)).astype(np.float32)
    matches = rng.poisson(1.0, size=(4_000, 8)).astype(np.int64)
    truth = np.log1p(matches) * 2 - 1 if signal == "matches" else score
    labels = (rng.random((4_000, 8)) < 1 / (1 + np.exp(-2 * truth))).astype(np.float32)
    labels[:, -1] = -1  # padding: never read
    model = _Scored(ml100k.schema, SequenceConfig(dim=4, layers=1, heads=1))
    stack, (probabilities, read) = fit_stack(model, _Split(score, matches, labels))
    mask = labels >= 0
    with torch.no_grad():
        served = model.stacked(torch.from_numpy(score), torch.from_numpy(matches)).numpy()
    # What it returns for valid's metrics is what the model now serves, on the candidates it read.
    np.testing.assert_array_equal(read, mask)
    np.testing.assert_allclose(probabilities, 1 / (1 + np.exp(-served)), rtol=1e-5)
    assert auc(labels[mask], served[mask]) == pytest.approx(stack.valid_auc_after if stack.kept
                                                              else stack.valid_auc_before, abs=1e-6)
    if signal == "matches":  # the count carries the label: the stack is kept and weighs it
        assert stack.kept
        assert stack.valid_auc_after > stack.valid_auc_before + 0.2
        assert stack.weights[1] > 1
        assert model.stack.tolist() == pytest.approx(stack.weights, abs=1e-5)
    else:  # the score carries it: a monotone rescaling of it scores the same AUC (a weight on matches at most
        # noise), and the stack's served scores are what its manifest says
        assert stack.weights[0] > 1
        assert abs(stack.weights[1]) < 0.2


def test_a_checkpoint_from_before_the_stack_loads_as_the_score_it_served(ml100k: PreparedDataset) -> None:
    torch.manual_seed(0)
    model = SequenceTeacher(ml100k.schema, SequenceConfig(dim=8, layers=1, heads=1, dropout=0.0)).eval()
    before = {k: v for k, v in model.state_dict().items() if k != "stack"}
    loaded = SequenceTeacher(ml100k.schema, SequenceConfig(dim=8, layers=1, heads=1, dropout=0.0)).eval()
    loaded.stack.fill_(3.0)
    loaded.load_state_dict(before)
    x = _tensors(ml100k, 8)
    assert loaded.stack.tolist() == list(UNSTACKED)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x), model(**x))


def test_the_sequence_teacher_is_served_by_triton_like_any_teacher(
        sequence_teacher: tuple[Path, dict], ml100k: PreparedDataset, tmp_path: Path) -> None:
    checkpoint, _ = sequence_teacher
    x = _tensors(ml100k, 8)
    model, _, _ = load_checkpoint(checkpoint)
    with torch.inference_mode():
        expected = model(**x).numpy()
    with teacher_process(checkpoint, log_path=tmp_path / "triton.log") as (endpoints, _):
        served = score(endpoints.grpc_url, {k: v.numpy() for k, v in x.items()})
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_a_device_or_a_size_the_machine_does_not_have_is_refused_before_training(
        ml100k: PreparedDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    if not torch.cuda.is_available():  # (no GPU here or in CI)
        with caplog.at_level(logging.INFO):
            assert resolve_device("auto").type == "cpu"
        assert "running on the CPU" in caplog.text, "auto falls back to the CPU and says so"
        with pytest.raises(DataError, match="no CUDA device"):
            resolve_device("cuda")
        result = CliRunner().invoke(app, ["teacher", "train", "--data", str(ml100k.directory), "--out",
                                          str(tmp_path / "t"), "--size", "seq-xs", "--device", "cuda"])
        assert result.exit_code == 2
        assert "--device" in result.output
    result = CliRunner().invoke(app, ["teacher", "train", "--data", str(ml100k.directory), "--out",
                                      str(tmp_path / "t"), "--size", "seq-huge"])
    assert result.exit_code == 2
    assert "seq-xl" in result.output, "an unknown size names the sizes there are"
    model = SequenceTeacher(ml100k.schema, SEQUENCE_SIZES["seq-s"])
    monkeypatch.setattr("psutil.virtual_memory", lambda: type("M", (), {"available": 64 << 20})())
    with pytest.raises(DataError, match=r"seq-s needs about .* GiB .* free"):
        check_memory("seq-s", model, 64, torch.device("cpu"))
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("limit", [None, 3])
def test_training_finds_in_the_history_what_serving_finds(limit: int | None) -> None:
    """The hard search (how often the history holds a candidate, hours since it last did, hours from its first
    match to its last: the user's own cadence), counted at every training position over the user's whole history,
    equals what serving finds for that position's request (a limited history: no cadence in training)."""
    from teacher_service.sequence import history_matches
    from teacher_service.sequence_train import _Window

    rng = np.random.default_rng(0)
    prefix = rng.integers(1, 8, size=40)  # item 1 is the unseen-item index: it never matches
    hours = np.cumsum(rng.random(40) * 5)
    offset = 25  # the window: the prefix's last 15 events
    window = _Window(prefix[offset:], prefix[offset:] * 0, np.zeros(15, np.float32), np.zeros(15), np.zeros(15),
                     float(hours[-1]), prefix, hours)
    candidates = np.arange(1, 9)
    counts, since, span = window.matches(candidates, limit)
    for t in range(offset, 39):  # the state after event t predicts event t + 1
        start = 0 if limit is None else max(0, t + 1 - limit)
        history = torch.from_numpy(prefix[start:t + 1]).unsqueeze(0)
        to_target = torch.from_numpy(hours[t + 1] - hours[start:t + 1]).float().unsqueeze(0)
        found, ago, spans = history_matches(torch.from_numpy(candidates).unsqueeze(0), history, to_target)
        np.testing.assert_array_equal(counts[t - offset], found[0].numpy())
        np.testing.assert_allclose(since[t - offset], ago[0].numpy(), rtol=1e-5)
        if limit is None:
            np.testing.assert_allclose(span[t - offset], spans[0].numpy(), rtol=1e-4, atol=1e-3)
        else:
            assert np.isnan(span[t - offset]).all()
    assert counts[:, 0].sum() == 0, "the unseen-item index is never a match"
    assert limit is not None or (span[counts >= 2] > 0).all(), "two matches or more span some time"


def test_a_limited_teacher_trains_on_only_its_most_recent_events(ml100k: PreparedDataset) -> None:
    """The 10-event twin's training windows are longer than 10: a banded mask keeps each position to its own
    10 most recent events, as serving will."""
    torch.manual_seed(0)
    model = SequenceTeacher(ml100k.schema, SequenceConfig(dim=16, layers=2, heads=1, dropout=0.0,
                                                          history_limit=10)).eval()
    items = torch.randint(2, 500, (1, 40))
    changed = items.clone()
    changed[0, 5] = 3  # 15 and more events before position 20..39
    gaps, lengths = torch.rand(1, 40), torch.tensor([40])
    with torch.no_grad():
        before = model.states(items, None, None, gaps, lengths)
        after = model.states(changed, None, None, gaps, lengths)
    # Two layers of a 10-event band reach 18 events back: positions 24 on do not see event 5.
    torch.testing.assert_close(before[:, 24:], after[:, 24:])
    assert not torch.allclose(before[:, 5:15], after[:, 5:15])
