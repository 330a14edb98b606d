"""A gRPC message becomes the same ranking request, and the same tensors, as its JSON twin; the
constraints the JSON decoder applies are applied to messages too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recdistill.core._proto import ranking_pb2
from recdistill.core.contracts.rank_grpc import request_from_dict, request_from_message
from recdistill.core.contracts.records import SampledRequest, decode_record, encode_record
from recdistill.core.errors import ValidationError
from recdistill.core.features.encoder import Encoder
from recdistill.core.features.request import MAX_CANDIDATES, parse_rank_request
from recdistill.core.features.schema import FeatureSchema

EXAMPLE = Path(__file__).parents[2] / "examples" / "rank_request.json"


def test_message_and_json_encode_to_the_same_tensors(ml100k_dir: Path) -> None:
    body = json.loads(EXAMPLE.read_text())
    body["candidates"][0]["features"] = {"genres": ["Drama"], "release_year": 2001}
    from_json = parse_rank_request(body)
    from_message = request_from_message(request_from_dict(body))
    assert len(from_message.history) == len(from_json.history)
    assert from_message.candidates[0].features.genres == ["Drama"]
    assert from_message.candidates[1].features is None
    encoder = Encoder(FeatureSchema.load(ml100k_dir / "features.json"), "student")
    json_tensors, _ = encoder.encode_requests([from_json], now=1.0)
    message_tensors, _ = encoder.encode_requests([from_message], now=1.0)
    for name, array in json_tensors.items():
        np.testing.assert_array_equal(message_tensors[name], array, err_msg=name)
    # What the sample log stores for a gRPC request decodes back to the same request.
    record = SampledRequest(request_id="r", ts=1.0, request_ts=1.0, model_version="v", sampling_probability=1.0,
                            request=from_message, student_view="student", scores=[], positions=[])
    assert decode_record(encode_record(record)).request == from_message


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (ranking_pb2.RankRequest(candidates=[ranking_pb2.Candidate(item_id="1")]), "user"),
        (ranking_pb2.RankRequest(user=ranking_pb2.User(user_id="1")), "candidates"),
        (ranking_pb2.RankRequest(user=ranking_pb2.User(user_id="1"),
                                 candidates=[ranking_pb2.Candidate(item_id="1")] * (MAX_CANDIDATES + 1)),
         "candidates"),
        (ranking_pb2.RankRequest(user=ranking_pb2.User(user_id="1"), candidates=[ranking_pb2.Candidate(item_id="1")],
                                 request_id="r" * 129), "request_id"),
        (ranking_pb2.RankRequest(user=ranking_pb2.User(user_id="1", age=float("nan")),
                                 candidates=[ranking_pb2.Candidate(item_id="1")]), "user.age"),
        (ranking_pb2.RankRequest(user=ranking_pb2.User(user_id="1"), candidates=[ranking_pb2.Candidate(
            item_id="1", features=ranking_pb2.ItemFeatures(release_year=float("inf")))]),
         "candidates.0.features.release_year"),
        (ranking_pb2.RankRequest(user=ranking_pb2.User(user_id="1"), candidates=[ranking_pb2.Candidate(item_id="1")],
                                 history=[ranking_pb2.HistoryEvent(item_id="2", ts=-1.0)]), "history.0.ts"),
        (ranking_pb2.RankRequest(user=ranking_pb2.User(user_id="1"), candidates=[ranking_pb2.Candidate(item_id="1")],
                                 context=ranking_pb2.Context(ts=1e300)), "context.ts"),
    ],
)
def test_message_constraints_name_the_field(message: ranking_pb2.RankRequest, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        request_from_message(message)
    assert caught.value.field == field
