from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest

from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.synthetic import synthetic_requests
from recdistill.core.errors import DataError, SchemaMismatchError, ValidationError
from recdistill.core.features.encoder import MODEL_INPUTS, Encoder
from recdistill.core.features.request import check_limits, parse_rank_request
from recdistill.core.features.schema import MISSING_INDEX, OOV_INDEX, FeatureSchema

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).parents[2] / "examples" / "rank_request.json"


def _events_to_check(dataset: PreparedDataset) -> list[int]:
    events = dataset.events
    long_history = int(events["hist_len"].idxmax())
    empty_history = int(events.index[events["hist_len"] == 0][0])
    rng = np.random.default_rng(1)
    return [long_history, empty_history, *rng.choice(len(events), 40, replace=False).tolist()]


@pytest.mark.parametrize("view", ["teacher", "student"])
@pytest.mark.parametrize("task", ["ctr", "slate"])
def test_dataset_row_and_request_body_encode_identically(ml100k: PreparedDataset, view: str, task: str) -> None:
    encoder = Encoder(ml100k.schema, view)
    event_ids = _events_to_check(ml100k)
    from_rows, rows_mask = encoder.assemble(ml100k.contexts(encoder, event_ids, task))
    # The request path starts from JSON bytes, exactly as the HTTP server receives them.
    bodies = [orjson.dumps(ml100k.to_request(e, task)) for e in event_ids]
    from_requests, requests_mask = encoder.encode_requests([parse_rank_request(b) for b in bodies])
    assert set(from_rows) == set(MODEL_INPUTS)
    for name in MODEL_INPUTS:
        assert from_rows[name].dtype == from_requests[name].dtype, name
        np.testing.assert_array_equal(from_rows[name], from_requests[name], err_msg=name)
    np.testing.assert_array_equal(rows_mask, requests_mask)
    assert from_rows["hist_item"].shape[1] <= encoder.history_len


def test_history_beyond_the_view_is_truncated_to_the_most_recent(ml100k: PreparedDataset) -> None:
    encoder = Encoder(ml100k.schema, "student")
    request = parse_rank_request(EXAMPLE.read_bytes())
    tensors, _ = encoder.encode_requests([request])
    assert tensors["hist_item"].shape == (1, encoder.history_len)
    expected = encoder.map_items([str(e.item_id) for e in request.history[-encoder.history_len:]])
    np.testing.assert_array_equal(tensors["hist_item"][0], expected)
    assert tensors["hist_length"][0, 0] == pytest.approx(np.log1p(len(request.history)))


def test_unknown_ids_map_to_oov_and_missing_fields_to_missing(ml100k: PreparedDataset) -> None:
    encoder = Encoder(ml100k.schema, "teacher")
    body = {
        "user": {"user_id": "no-such-user", "occupation": "astronaut"},
        "history": [{"item_id": "no-such-item"}, {"item_id": 50, "action": "superlike"}],
        "candidates": [{"item_id": 99999}, {"item_id": "50"},
                       {"item_id": "brand-new", "features": {"genres": ["Drama"], "release_year": 2001}}],
        "context": {"ts": 900000000},
    }
    tensors, mask = encoder.encode_requests([parse_rank_request(body)])
    user_id, age, gender, occupation, _ = tensors["user_cat"][0]
    assert (user_id, occupation) == (OOV_INDEX, OOV_INDEX)
    assert (age, gender) == (MISSING_INDEX, MISSING_INDEX)
    assert tensors["hist_item"][0, 0] == OOV_INDEX
    assert tensors["hist_action"][0].tolist() == [MISSING_INDEX, OOV_INDEX]
    assert tensors["cand_item"][0, 0] == OOV_INDEX
    assert tensors["cand_item"][0, 1] >= 2  # "50" is known; int 50 and "50" are the same id
    assert tensors["cand_item"][0, 2] == OOV_INDEX
    assert tensors["cand_genres"][0, 2].sum() == 1.0  # features given in the request are used
    assert tensors["cand_genres"][0, 0].sum() == 0.0  # unknown item, no features: zeros
    assert mask.all()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        ({"history": [], "candidates": [{"item_id": 1}]}, "user"),
        ({"user": {"user_id": 1}, "candidates": []}, "candidates"),
        ({"user": {"user_id": 1}}, "candidates"),
        ({"user": {"user_id": 1.5}, "candidates": [{"item_id": 1}]}, "user.user_id"),
        ({"user": {"user_id": 1}, "candidates": [{"item_id": True}]}, "candidates.0.item_id"),
        ({"user": {"user_id": 1}, "candidates": [{"item_id": 1}], "history": [{"ts": 5}]}, "history.0.item_id"),
        ({"user": {"user_id": 1}, "candidates": [{"item_id": 1}], "history": "x"}, "history"),
        ({"user": {"user_id": 1, "age": "old"}, "candidates": [{"item_id": 1}]}, "user.age"),
        ({"user": {"user_id": 1}, "candidates": [{"item_id": 1}], "colour": 3}, "colour"),
        ({"user": {"user_id": 1}, "candidates": [{"item_id": i} for i in range(1_001)]}, "candidates"),
        ({"user": {"user_id": 1}, "candidates": [{"item_id": 1}],
          "history": [{"item_id": i} for i in range(20_001)]}, "history"),
    ],
)
def test_bad_requests_name_the_field_at_fault(body: bytes | dict, field: str) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ValidationError) as caught:
        parse_rank_request(raw)
    assert caught.value.field == field


def test_server_limits_name_the_field() -> None:
    request = parse_rank_request({"user": {"user_id": 1}, "candidates": [{"item_id": 1}] * 5,
                                  "history": [{"item_id": 1}] * 11})
    with pytest.raises(ValidationError, match="candidates"):
        check_limits(request, max_candidates=4, max_history=100)
    with pytest.raises(ValidationError, match="history"):
        check_limits(request, max_candidates=10, max_history=10)


def test_20k_history_request_encodes_for_the_teacher(ml100k: PreparedDataset) -> None:
    (body,) = synthetic_requests(1, history_len=20_000, candidates=100, seed=3)
    request = parse_rank_request(orjson.dumps(body))
    tensors, _ = Encoder(ml100k.schema, "teacher").encode_requests([request])
    assert tensors["hist_item"].shape == (1, 20_000)
    assert tensors["cand_item"].shape == (1, 100)
    assert np.all(tensors["hist_recency"] >= 0)


def test_schema_hash_is_stable_and_pins_models(ml100k: PreparedDataset, tmp_path: Path) -> None:
    schema = ml100k.schema
    schema.save(tmp_path / "features.json")
    reloaded = FeatureSchema.load(tmp_path / "features.json")
    assert reloaded.hash == schema.hash == ml100k.manifest["schema_hash"]
    reloaded.require_hash(schema.hash, "model")
    with pytest.raises(SchemaMismatchError):
        reloaded.require_hash("0" * 16, "model")
    edited = json.loads((tmp_path / "features.json").read_text())
    edited["item_vocab"] = edited["item_vocab"][:-1]
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    with pytest.raises(DataError, match="hash"):
        FeatureSchema.load(tmp_path / "edited.json")


def test_vocabularies_come_from_train_only(ml100k: PreparedDataset) -> None:
    events = ml100k.events
    train_items = set(events.loc[events["split"] == "train", "item_id"])
    assert set(ml100k.schema.item_vocab) == train_items
    assert set(events["item_id"]) - train_items, "ML-100K has items first seen after the train window"
    assert set(ml100k.schema.user_vocabs["user_id"]) == set(events.loc[events["split"] == "train", "user_id"])
