"""The channel the long history travels through: the student's user channel, dense black-box candidates, and
the per-user training window."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

from distill_worker.export import export_onnx, parity
from distill_worker.settings import DistillConfig
from distill_worker.student import StudentConfig, StudentModel, window_matches
from distill_worker.trainer import KD_LOSSES, distill_loss
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.dense import DenseCandidates
from recdistill.core.errors import DataError
from recdistill.core.features.encoder import Encoder
from recdistill.core.features.schema import FeatureSchema, ModelView
from recdistill.core.training import EncodedSplit
from recdistill.demo.config import DemoConfig, load_config_file

DENSE = DenseCandidates(own=6, popular=3)


def with_channel(schema: FeatureSchema, buckets: int = 512, dim: int = 8) -> FeatureSchema:
    """The schema with a user channel on its student view."""
    student = schema.view("student")
    return dataclasses.replace(schema, views=schema.views | {"student": ModelView(
        student.history_len, student.features, buckets, dim)}, _hash=None)


def _split(dataset: PreparedDataset, schema: FeatureSchema, events: int = 64) -> EncodedSplit:
    encoder = Encoder(schema, "student")
    ids = dataset.split("train", "slate")[-events:]
    return EncodedSplit(task="slate", event_ids=ids, contexts=dataset.contexts(encoder, ids, "slate", 4, DENSE),
                        labels=dataset.labels(ids, "slate", 4, DENSE),
                        user_ids=dataset.events["user_id"].to_numpy()[ids], encoder=encoder)


def test_a_user_the_student_never_saw_reads_the_learned_default(ml100k: PreparedDataset) -> None:
    schema = with_channel(ml100k.schema)
    split = _split(ml100k, schema)
    assert "user_hash" in split.encoder.input_names
    torch.manual_seed(0)
    model = StudentModel(schema, StudentConfig(user_dropout=0.0), view="student")
    batch = split.batch(np.arange(len(split)))
    soft = torch.rand(batch.labels.shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    for _ in range(5):  # the trained users' rows and the default move; no other row does
        loss = distill_loss(model, dataclasses.replace(batch, extras={"soft_label": soft}), DistillConfig())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    seen = {int(h) for h in batch.inputs["user_hash"][:, 0]}
    never = next(f"new-user-{i}" for i in range(10_000) if split.encoder.user_bucket(f"new-user-{i}") not in seen)
    row = split.encoder.user_bucket(never)
    assert 0 < row < model.user_rows
    assert float(model.user_default.detach().abs().sum()) > 0, "the default is learned"
    inputs = {name: tensor[:2].clone() for name, tensor in batch.inputs.items()}
    inputs["user_hash"][:] = row
    with torch.no_grad():
        torch.testing.assert_close(model.user_vector(inputs), model.user_default.expand(2, -1))
        trained = model.user_vector({"user_hash": batch.inputs["user_hash"][:1]})
        assert not torch.equal(trained[0], model.user_default), "a trained user has a row of its own"
        scores = model(**inputs)
    assert torch.isfinite(scores).all()
    # The exported graph reads the channel too, and ONNX Runtime agrees with torch for the unseen user.
    probe = {name: tensor.numpy() for name, tensor in inputs.items()}
    assert parity(export_onnx(model, probe), model, probe) <= 1e-5


def test_dense_rows_never_reach_the_serving_heads_loss(ml100k: PreparedDataset) -> None:
    schema = with_channel(ml100k.schema)
    split = _split(ml100k, schema)
    batch = split.batch(np.arange(32))
    observed = torch.zeros(batch.labels.shape)
    observed[:, :5] = 1.0  # the item and the 4 hard-label negatives; then the dense rows
    torch.manual_seed(0)
    model = StudentModel(schema, StudentConfig(user_dropout=0.0, oov_dropout=0.0, dropout=0.0), view="student")

    def grads(labels: torch.Tensor, soft: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad()
        distill_loss(model, dataclasses.replace(batch, labels=labels, extras={"observed": observed,
                                                                             "soft_label": soft}),
                     DistillConfig(head="aux")).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    soft = torch.full(batch.labels.shape, 0.3)
    before = grads(batch.labels, soft)
    changed_labels, changed_soft = batch.labels.clone(), soft.clone()
    changed_labels[:, 5:] = 1.0  # a dense row's "label" (it has none) and its teacher label both change
    changed_soft[:, 5:] = 0.9
    after = grads(changed_labels, changed_soft)
    torch.testing.assert_close(after["serving_head.weight"], before["serving_head.weight"])
    torch.testing.assert_close(after["serving_head.bias"], before["serving_head.bias"])
    assert not torch.allclose(after["teacher_head.weight"], before["teacher_head.weight"]), \
        "the dense rows train the teacher head"
    # Plain KD (the ablation) puts them on the serving head: the same check must then see them.
    model.zero_grad()
    distill_loss(model, dataclasses.replace(batch, extras={"observed": observed, "soft_label": changed_soft}),
                 DistillConfig(head="serving")).backward()
    plain = model.serving_head.weight.grad.clone()
    model.zero_grad()
    distill_loss(model, dataclasses.replace(batch, extras={"observed": observed, "soft_label": soft}),
                 DistillConfig(head="serving")).backward()
    assert not torch.allclose(plain, model.serving_head.weight.grad)


def test_dense_candidates_are_chosen_without_reading_the_label(ml100k: PreparedDataset, tmp_path: Path) -> None:
    events = ml100k.split("train", "slate")[-50:]
    chosen = {int(e): ml100k.dense_candidates(int(e), DENSE) for e in events}
    assert all(len(c) <= DENSE.size and len(set(c)) == len(c) for c in chosen.values())
    # What the request holds decides: the user's earlier items, then popular ones.
    for event in events[:10]:
        row = ml100k.events.iloc[int(event)]
        earlier = set(ml100k.timelines.loc[row["user_id"]].item_ids[: int(row["hist_len"])])
        own = [item for item in chosen[int(event)] if item in earlier]
        assert len(own) >= min(DENSE.own, len(earlier))
    # Another label for the same requests (the real item and the observed label changed): the same candidates.
    original = ml100k.events[["item_id", "label"]].copy()
    try:
        ml100k.events.loc[events, "item_id"] = "some-other-item"
        ml100k.events.loc[events, "label"] = 1 - ml100k.events.loc[events, "label"]
        assert {int(e): ml100k.dense_candidates(int(e), DENSE) for e in events} == chosen
    finally:
        ml100k.events[["item_id", "label"]] = original
    # The real item is one of the earlier items like any other: it is not left out (the label is not read).
    history = ["a", "b", "c"]
    assert {tuple(DENSE.choose(history, ["p"], seed=s)) for s in range(5)} == {("a", "b", "c", "p")}


def test_window_matches_count_the_candidate_in_the_window() -> None:
    x = {"hist_item": torch.tensor([[5, 7, 5, 0]]), "cand_item": torch.tensor([[5, 7, 9, 1]]),
         "hist_recency": torch.tensor([[3.0, 2.0, 1.0, 0.0]])}
    found = window_matches(x)
    torch.testing.assert_close(found[0, :, 0], torch.log1p(torch.tensor([2.0, 1.0, 0.0, 0.0])))
    torch.testing.assert_close(found[0, :, 1], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(found[0, :, 2], torch.tensor([1.0, 2.0, 0.0, 0.0]))  # the most recent match


def test_the_training_window_counts_events_per_user(ml100k: PreparedDataset) -> None:
    events = ml100k.split("train", "slate")
    kept = ml100k.recent_per_user(events, 3)
    users = ml100k.events["user_id"].to_numpy()
    per_user = {u: events[users[events] == u] for u in np.unique(users[events])}
    assert sorted(kept) == sorted(np.concatenate([ids[-3:] for ids in per_user.values()]))


def test_a_config_files_unknown_key_is_refused_by_name(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[demo]\nteacher_sizes = ["seq-xs"]\nstudent_window_events = 25\n')
    assert load_config_file(good) == {"teacher_sizes": ("seq-xs",), "student_window_events": 25}
    assert dataclasses.replace(DemoConfig(), **load_config_file(good)).student_window_events == 25
    bad = tmp_path / "bad.toml"
    bad.write_text('[demo]\nteacher_sizez = ["seq-xs"]\n')
    with pytest.raises(DataError, match="'teacher_sizez'"):
        load_config_file(bad)


def test_every_distillation_loss_a_setting_names_has_its_function() -> None:
    """`kd_loss` is a Literal resolved through one name -> function table: the two cannot drift apart, and each
    term is 0 where the student's logit equals the teacher's."""
    assert set(typing.get_args(typing.get_type_hints(DistillConfig)["kd_loss"])) == set(KD_LOSSES)
    soft = torch.tensor([[0.2, 0.7]])
    logits = torch.log(soft / (1 - soft))
    assert float(KD_LOSSES["mse"](logits, soft).abs().max()) < 1e-6
    entropy = -(soft * soft.log() + (1 - soft) * (1 - soft).log())
    torch.testing.assert_close(KD_LOSSES["ce"](logits, soft), entropy)
    with pytest.raises(pydantic.ValidationError, match="kd_loss"):  # as the worker's settings read it
        pydantic.TypeAdapter(DistillConfig).validate_python({"kd_loss": "kl"})
