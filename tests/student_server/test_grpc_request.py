"""A gRPC message (features in typed maps, one proto for every schema) becomes the same ranking request,
and the same tensors, as its JSON twin; the constraints the JSON decoder applies are applied to
messages too, with the same field names."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import numpy as np
import orjson
import pytest

from recdistill.core._proto import ranking_pb2
from recdistill.core.contracts.rank_grpc import request_from_dict, request_from_message
from recdistill.core.contracts.records import SampledRequest, decode_record, encode_record
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.errors import ValidationError
from recdistill.core.features.encoder import Encoder
from recdistill.core.features.request import MAX_CANDIDATES

EXAMPLE = Path(__file__).parents[2] / "examples" / "rank_request.movielens-100k.json"


def _value(**kind: object) -> ranking_pb2.Value:
    return ranking_pb2.Value(**kind)


def test_message_and_json_encode_to_the_same_tensors(ml100k: PreparedDataset) -> None:
    body = json.loads(EXAMPLE.read_text())
    body["candidates"][0]["features"] = {"genres": ["Drama"], "release_year": 2001}
    types = ml100k.schema.request_types()
    from_json = types.parse(body)
    from_message = request_from_message(request_from_dict(body), types)
    assert len(from_message.history) == len(from_json.history)
    assert from_message.candidates[0].features.genres == ["Drama"]
    assert from_message.candidates[1].features is None
    encoder = Encoder(ml100k.schema, "student")
    json_tensors, _ = encoder.encode_requests([from_json], now=1.0)
    message_tensors, _ = encoder.encode_requests([from_message], now=1.0)
    for name, array in json_tensors.items():
        np.testing.assert_array_equal(message_tensors[name], array, err_msg=name)
    # What the sample log stores for a gRPC request decodes back to the same request.
    count = len(from_message.candidates)
    scores, positions = SampledRequest.pack(np.full(count, 0.5), np.arange(count))
    record = SampledRequest(request_id="r", ts=1.0, request_ts=1.0, model_version="v", sampling_probability=1.0,
                            request=msgspec.json.encode(from_message), scores=scores,
                            positions=positions)
    assert decode_record(encode_record(record), types.rank_request).request == from_message


def test_the_same_proto_carries_the_ecommerce_schema(ecommerce: PreparedDataset) -> None:
    types = ecommerce.schema.request_types()
    event = int(ecommerce.split("test", "slate")[0])
    body = ecommerce.to_request(event, "slate")
    body["candidates"][0]["features"] = {"brand": "brand-3", "price": 19.99, "category": "cat-2"}
    assert {"device", "hour"} <= set(body["context"])
    assert any("value" in e for e in body["history"])
    from_json = types.parse(orjson.dumps(body))
    from_message = request_from_message(request_from_dict(body), types)
    for view in ("teacher", "student"):
        encoder = Encoder(ecommerce.schema, view)
        json_tensors, _ = encoder.encode_requests([from_json])
        message_tensors, _ = encoder.encode_requests([from_message])
        for name, array in json_tensors.items():
            np.testing.assert_array_equal(message_tensors[name], array, err_msg=f"{view} {name}")


def _message(**parts: object) -> ranking_pb2.RankRequest:
    fields: dict[str, object] = {"user": ranking_pb2.User(user_id="1"),
                                 "candidates": [ranking_pb2.Candidate(item_id="1")]}
    return ranking_pb2.RankRequest(**(fields | parts))


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (ranking_pb2.RankRequest(candidates=[ranking_pb2.Candidate(item_id="1")]), "user"),
        (ranking_pb2.RankRequest(user=ranking_pb2.User(user_id="1")), "candidates"),
        (_message(candidates=[ranking_pb2.Candidate(item_id="1")] * (MAX_CANDIDATES + 1)), "candidates"),
        (_message(request_id="r" * 129), "request_id"),
        (_message(user=ranking_pb2.User(user_id="1", features={"age": _value(number_value=float("nan"))})),
         "user.age"),
        (_message(user=ranking_pb2.User(user_id="1", features={"age": _value(string_value="old")})), "user.age"),
        (_message(user=ranking_pb2.User(user_id="1", features={"colour": _value(string_value="red")})),
         "user.colour"),
        (_message(candidates=[ranking_pb2.Candidate(item_id="1", features={
            "release_year": _value(number_value=float("inf"))})]), "candidates.0.features.release_year"),
        (_message(candidates=[ranking_pb2.Candidate(item_id="1", features={
            "genres": _value(string_value="Drama")})]), "candidates.0.features.genres"),
        (_message(history=[ranking_pb2.HistoryEvent(item_id="2", ts=-1.0)]), "history.0.ts"),
        (_message(context=ranking_pb2.Context(ts=1e300)), "context.ts"),
        (_message(context=ranking_pb2.Context(features={"device": _value(string_value="x")})), "context.device"),
    ],
)
def test_message_constraints_name_the_field(ml100k: PreparedDataset, message: ranking_pb2.RankRequest,
                                            field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        request_from_message(message, ml100k.schema.request_types())
    assert caught.value.field == field
