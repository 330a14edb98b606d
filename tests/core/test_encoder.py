from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest

from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.synthetic import synthetic_requests
from recdistill.core.errors import DataError, SchemaMismatchError, ValidationError
from recdistill.core.features.encoder import Encoder
from recdistill.core.features.request import check_limits
from recdistill.core.features.schema import FIRST_KNOWN_INDEX, MISSING_INDEX, OOV_INDEX, FeatureSchema

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).parents[2] / "examples" / "rank_request.movielens-100k.json"


def _events_to_check(dataset: PreparedDataset, task: str) -> list[int]:
    events = dataset.events
    long_history = int(events["hist_len"].idxmax())
    empty_history = int(events.index[events["hist_len"] == 0][0])
    rng = np.random.default_rng(1)
    pool = dataset.split("test", task) if task == "slate" else np.arange(len(events))
    return [long_history, empty_history, *rng.choice(pool, 40, replace=False).tolist()]


@pytest.mark.parametrize("view", ["teacher", "student"])
@pytest.mark.parametrize("task", ["ctr", "slate"])
def test_dataset_row_and_request_body_encode_identically(any_dataset: PreparedDataset, view: str, task: str) -> None:
    dataset = any_dataset
    encoder = Encoder(dataset.schema, view)
    event_ids = _events_to_check(dataset, task)
    if task == "slate":
        event_ids = [e for e in event_ids if dataset.events["slate_event"].iloc[e]]
    from_rows, rows_mask = encoder.assemble(dataset.contexts(encoder, event_ids, task))
    # The request path starts from JSON bytes, exactly as the HTTP server receives them.
    bodies = [orjson.dumps(dataset.to_request(e, task)) for e in event_ids]
    from_requests, requests_mask = encoder.encode_requests([dataset.schema.parse_request(b) for b in bodies])
    assert list(from_rows) == list(from_requests) == list(encoder.input_names)
    for name, spec in encoder.input_specs.items():
        assert from_rows[name].dtype == from_requests[name].dtype == spec.numpy_dtype, name
        np.testing.assert_array_equal(from_rows[name], from_requests[name], err_msg=name)
    np.testing.assert_array_equal(rows_mask, requests_mask)
    assert from_rows["hist_item"].shape[1] <= encoder.history_len


def test_each_schema_has_its_own_input_signature(ml100k: PreparedDataset, ecommerce: PreparedDataset) -> None:
    assert Encoder(ml100k.schema, "student").input_names == (
        "user_cat", "hist_item", "hist_action", "hist_recency", "hist_length", "cand_item", "cand_multi", "cand_num")
    teacher = Encoder(ecommerce.schema, "teacher")
    assert teacher.input_names == ("user_cat", "user_num", "hist_item", "hist_action", "hist_value", "hist_recency",
                                   "hist_length", "cand_item", "cand_cat", "cand_num")
    assert teacher.input_specs["user_cat"].dims == (3,)  # segment, device, hour
    assert teacher.input_specs["cand_cat"].dims == (-1, 2)  # category, brand
    # The student view skips `age`, the only numeric user feature: no user_num input at all.
    assert "user_num" not in Encoder(ecommerce.schema, "student").input_names


def test_history_beyond_the_view_is_truncated_to_the_most_recent(ml100k: PreparedDataset) -> None:
    encoder = Encoder(ml100k.schema, "student")
    request = ml100k.schema.parse_request(EXAMPLE.read_bytes())
    tensors, _ = encoder.encode_requests([request])
    assert tensors["hist_item"].shape == (1, encoder.history_len)
    expected = encoder.map_items([str(e.item_id) for e in request.history[-encoder.history_len:]])
    np.testing.assert_array_equal(tensors["hist_item"][0], expected)
    assert tensors["hist_length"][0, 0] == pytest.approx(np.log1p(len(request.history)))


def test_unknown_ids_map_to_oov_and_missing_fields_to_missing(ml100k: PreparedDataset) -> None:
    encoder = Encoder(ml100k.schema, "teacher")
    body = {
        "user": {"user_id": "no-such-user", "occupation": "astronaut", "zip_code": "99501"},
        "history": [{"item_id": "no-such-item"}, {"item_id": 50, "action": "superlike"}],
        "candidates": [{"item_id": 99999}, {"item_id": "50"},
                       {"item_id": "brand-new", "features": {"genres": ["Drama"], "release_year": 2001}}],
        "context": {"ts": 900000000},
    }
    tensors, mask = encoder.encode_requests([ml100k.schema.parse_request(body)])
    age, gender, occupation, zip_prefix = tensors["user_cat"][0]
    assert occupation == OOV_INDEX
    assert (age, gender) == (MISSING_INDEX, MISSING_INDEX)
    assert zip_prefix >= FIRST_KNOWN_INDEX  # the prefix "99" is known though the whole code is not
    assert tensors["hist_item"][0, 0] == OOV_INDEX
    assert tensors["hist_action"][0].tolist() == [MISSING_INDEX, OOV_INDEX]
    assert tensors["cand_item"][0, 0] == OOV_INDEX
    assert tensors["cand_item"][0, 1] >= 2  # "50" is known; int 50 and "50" are the same id
    assert tensors["cand_item"][0, 2] == OOV_INDEX
    assert tensors["cand_multi"][0, 2].sum() == 1.0  # features given in the request are used
    assert tensors["cand_multi"][0, 0].sum() == 0.0  # unknown item, no features: zeros
    assert mask.all()


def test_bucketized_hashed_and_log_numeric_features(ecommerce: PreparedDataset) -> None:
    schema = ecommerce.schema
    encoder = Encoder(schema, "teacher")
    hour, brand, price = schema.feature("hour"), schema.feature("brand"), schema.feature("price")
    assert [encoder.category_index(hour, h) for h in (0, 6, 13.5, 23, None)] == [2, 3, 4, 7, MISSING_INDEX]
    assert encoder.category_index(brand, "brand-7") == encoder.category_index(brand, "brand-7")
    assert FIRST_KNOWN_INDEX <= encoder.category_index(brand, "never-seen-brand") < brand.rows
    assert encoder.number(price, 100.0) == pytest.approx((np.log1p(100.0) - price.mean) / price.std)
    assert encoder.number(schema.feature("age"), None) == pytest.approx((35 - schema.feature("age").mean)
                                                                        / schema.feature("age").std)
    # A SKU never seen anywhere still gets a bucket (hashed ids need no vocabulary).
    assert encoder.map_items(["sku-never-seen"])[0] >= FIRST_KNOWN_INDEX


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
        ({"user": {"user_id": 1, "colour": "red"}, "candidates": [{"item_id": 1}]}, "user.colour"),
        ({"user": {"user_id": 1}, "candidates": [{"item_id": 1, "features": {"genres": "Drama"}}]},
         "candidates.0.features.genres"),
        ({"user": {"user_id": 1}, "candidates": [{"item_id": 1, "features": {"brand": "x"}}]},
         "candidates.0.features.brand"),
        ({"user": {"user_id": 1}, "candidates": [{"item_id": 1}], "colour": 3}, "colour"),
        ({"user": {"user_id": 1}, "candidates": [{"item_id": i} for i in range(1_001)]}, "candidates"),
        ({"user": {"user_id": 1}, "candidates": [{"item_id": 1}],
          "history": [{"item_id": i} for i in range(20_001)]}, "history"),
    ],
)
def test_bad_requests_name_the_field_at_fault(ml100k: PreparedDataset, body: bytes | dict, field: str) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ValidationError) as caught:
        ml100k.schema.parse_request(raw)
    assert caught.value.field == field


# JSON has no NaN or Infinity: such a body is not JSON. A number that overflows to infinity is a bad field.
@pytest.mark.parametrize(("literal", "field"), [(b"NaN", "body"), (b"Infinity", "body"), (b"1e400", "user.age"),
                                                (b'"old"', "user.age"), (b"[1]", "user.age")])
def test_non_finite_numbers_are_refused(ecommerce: PreparedDataset, literal: bytes, field: str) -> None:
    body = b'{"user": {"user_id": 1, "age": ' + literal + b'}, "candidates": [{"item_id": 1}]}'
    with pytest.raises(ValidationError) as caught:
        ecommerce.schema.parse_request(body)
    assert caught.value.field == field


def test_unknown_features_can_be_ignored_by_setting(ml100k: PreparedDataset) -> None:
    body = {"user": {"user_id": 1, "colour": "red"}, "candidates": [{"item_id": 1, "features": {"x": 1}}]}
    request = ml100k.schema.request_types(ignore_unknown=True).parse(body)
    assert request.user.user_id == 1


def test_server_limits_name_the_field(ml100k: PreparedDataset) -> None:
    request = ml100k.schema.parse_request({"user": {"user_id": 1}, "candidates": [{"item_id": 1}] * 5,
                                           "history": [{"item_id": 1}] * 11})
    with pytest.raises(ValidationError, match="candidates"):
        check_limits(request, max_candidates=4, max_history=100)
    with pytest.raises(ValidationError, match="history"):
        check_limits(request, max_candidates=10, max_history=10)


def test_20k_history_request_encodes_for_the_teacher(any_dataset: PreparedDataset) -> None:
    (body,) = synthetic_requests(any_dataset.schema, 1, history_len=20_000, candidates=100, seed=3)
    request = any_dataset.schema.parse_request(orjson.dumps(body))
    encoder = Encoder(any_dataset.schema, "teacher")
    tensors, _ = encoder.encode_requests([request])
    assert tensors["hist_item"].shape == (1, min(20_000, encoder.history_len))
    assert tensors["cand_item"].shape == (1, 100)
    assert np.all(tensors["hist_recency"] >= 0)
    assert all(np.isfinite(t).all() for t in tensors.values())


def test_schema_hash_is_stable_and_pins_models(any_dataset: PreparedDataset, tmp_path: Path) -> None:
    schema = any_dataset.schema
    schema.save(tmp_path / "features.json")
    reloaded = FeatureSchema.load(tmp_path / "features.json")
    assert reloaded.hash == schema.hash == any_dataset.manifest.schema_hash
    reloaded.require_hash(schema.hash, "model")
    with pytest.raises(SchemaMismatchError):
        reloaded.require_hash("0" * 16, "model")
    edited = json.loads((tmp_path / "features.json").read_text())
    edited["action_vocab"] = edited["action_vocab"][:-1]
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    with pytest.raises(DataError, match="hash"):
        FeatureSchema.load(tmp_path / "edited.json")


def test_vocabularies_come_from_train_only(ml100k: PreparedDataset) -> None:
    events = ml100k.events
    train = events[events["split"] == "train"]
    assert set(ml100k.schema.item_vocab) == set(train["item_id"])
    assert set(events["item_id"]) - set(train["item_id"]), "ML-100K has items first seen after the train window"
    occupations = {ml100k.users[u]["occupation"] for u in set(train["user_id"])}
    assert set(ml100k.schema.feature("occupation").vocab) == occupations
