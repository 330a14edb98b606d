"""The columnar gRPC request (recdistill.v3): the same tensors as its JSON and v2 twins on every shipped schema
shape, errors that name the column and the row, and on a real server the same scores over v2, v3 and HTTP, with
a sampled record that reads back as the request served."""

from __future__ import annotations

import json
import math
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from recdistill.core._proto import ranking_pb2_grpc, ranking_v3_pb2, ranking_v3_pb2_grpc
from recdistill.core.contracts.rank_grpc import request_from_dict
from recdistill.core.contracts.rank_v3 import columns_from_dict, request_from_columns
from recdistill.core.contracts.records import SampledRequest
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.errors import ValidationError
from recdistill.core.features.encoder import Encoder
from tests.student_server.conftest import make_settings, run_server, sampled_records

EXAMPLE = Path(__file__).parents[2] / "examples" / "rank_request.movielens-100k.json"


def _same_tensors(dataset: PreparedDataset, body: dict, views: tuple[str, ...]) -> None:
    types = dataset.schema.request_types()
    from_json = types.parse(json.dumps(body))
    message = ranking_v3_pb2.RankRequest.FromString(columns_from_dict(body).SerializeToString())
    columnar = request_from_columns(message, types)
    for view in views:
        encoder = Encoder(dataset.schema, view)
        expected, _ = encoder.encode_requests([from_json], now=1.0)
        got, _ = encoder.encode_requests([columnar], now=1.0)
        # What a sampled record keeps (the JSON body) reads back to the same tensors.
        again, _ = encoder.encode_requests([types.parse(columnar.to_json())], now=1.0)
        for name, array in expected.items():
            np.testing.assert_array_equal(got[name], array, err_msg=f"{view} {name}")
            np.testing.assert_array_equal(again[name], array, err_msg=f"{view} {name} (sampled)")


def test_columns_encode_to_the_same_tensors_as_json(ml100k: PreparedDataset, ecommerce: PreparedDataset) -> None:
    body = json.loads(EXAMPLE.read_text())
    body["candidates"][0]["features"] = {"genres": ["Drama"], "release_year": 2001}
    _same_tensors(ml100k, body, ("student", "student_compact", "teacher"))
    shop = ecommerce.to_request(int(ecommerce.split("test", "slate")[0]), "slate")
    shop["candidates"][1]["features"] = {"brand": "brand-3", "price": 19.99}
    assert any("value" in e for e in shop["history"])
    _same_tensors(ecommerce, shop, ("student", "teacher"))
    empty = dict(body, history=[])
    _same_tensors(ml100k, empty, ("student",))


@pytest.mark.parametrize(("change", "field"), [
    (lambda m: m.history_ts.append(1.0), "history_ts"),  # one row more than the ids
    (lambda m: m.history_ts.__setitem__(3, -5.0), "history_ts.3"),
    (lambda m: m.history_ts.__setitem__(2, math.inf), "history_ts.2"),
    (lambda m: m.history_actions.strings.append("4"), "history_actions"),
    (lambda m: m.history_values.extend([1.0] * len(m.history_item_ids)), "history_values"),  # no values here
    (lambda m: m.candidate_features["genres"].lists.add(values=["Drama"]), "candidate_features.genres"),
    (lambda m: m.user_features["age"].numbers.append(33.0), "user_features.age"),  # two rows for one user
    (lambda m: m.user_features["colour"].strings.append("red"), "user_features.colour"),
    (lambda m: m.user_features["age"].strings.append("x"), "user_features.age"),  # strings and numbers
    (lambda m: m.ClearField("candidate_ids"), "candidate_ids"),
    (lambda m: m.context_features["ts"].numbers.append(1.0), "context_features.ts"),
    (lambda m: setattr(m, "request_id", "r" * 129), "request_id"),
])
def test_a_column_at_fault_is_named_with_its_row(ml100k: PreparedDataset, change, field: str) -> None:  # noqa: ANN001
    message = columns_from_dict(json.loads(EXAMPLE.read_text()))
    change(message)
    with pytest.raises(ValidationError) as refused:
        request_from_columns(message, ml100k.schema.request_types())
    assert refused.value.field == field, refused.value


def test_unknown_times_are_nan_and_read_as_json_nulls(ml100k: PreparedDataset) -> None:
    body = json.loads(EXAMPLE.read_text())
    body["history"][1]["ts"] = None
    message = columns_from_dict(body)
    assert math.isnan(message.history_ts[1])
    _same_tensors(ml100k, body, ("student", "teacher"))


@pytest.mark.integration
async def test_v2_v3_and_http_score_the_same_request_alike(ml100k: PreparedDataset, registry: Path,
                                                           tmp_path: Path) -> None:
    body = json.loads(EXAMPLE.read_text())
    async with run_server(make_settings(registry, tmp_path, sampling_rate=1.0)) as server, \
            httpx.AsyncClient(base_url=server.http_url) as client, \
            grpc.aio.insecure_channel(server.grpc_target) as channel:
        http = (await client.post("/v1/rank", json=body)).json()
        v2 = await ranking_pb2_grpc.RankingStub(channel).Rank(request_from_dict(body))
        v3 = await ranking_v3_pb2_grpc.RankingStub(channel).Rank(columns_from_dict(body))
        bad = columns_from_dict(body)
        bad.history_ts.pop()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ranking_v3_pb2_grpc.RankingStub(channel).Rank(bad)
        feedback = await ranking_v3_pb2_grpc.RankingStub(channel).Feedback(
            ranking_v3_pb2.FeedbackRequest(request_id=v3.request_id, item_id=v3.ranking[0], label=1.0))
    np.testing.assert_allclose(list(v3.scores), http["scores"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(list(v2.scores), http["scores"], rtol=0, atol=1e-6)
    assert list(v3.ranking) == list(v2.ranking) == http["ranking"]
    assert v3.model_version == v2.model_version == http["model_version"] == "v1"
    assert v3.client_request_id == body["request_id"]
    assert len({v3.request_id, v2.request_id, http["request_id"]}) == 3
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith("history_ts:")
    assert feedback.accepted
    records = [r for r in sampled_records(tmp_path / "samples") if isinstance(r, SampledRequest)]
    assert len(records) == 3
    # The sampled request reads back to the same tensors, whichever wire it came by.
    types, encoder = ml100k.schema.request_types(), Encoder(ml100k.schema, "student")
    expected, _ = encoder.encode_requests([types.parse(json.dumps(body))], now=1.0)
    for record in records:
        got, _ = encoder.encode_requests([types.parse(json.dumps(record.request))], now=1.0)
        for name, array in expected.items():
            np.testing.assert_array_equal(got[name], array, err_msg=name)
        np.testing.assert_allclose(record.score_array, records[0].score_array, rtol=0, atol=1e-6)


@pytest.mark.parametrize("pair", [(1e308, 1e308), (math.inf, -math.inf)])
def test_huge_numbers_are_named_not_an_internal_error(ml100k: PreparedDataset, pair: tuple[float, float]) -> None:
    """The fuzz test's find: times near the largest float (or inf and -inf) broke the column check (fsum)."""
    message = columns_from_dict(json.loads(EXAMPLE.read_text()))
    message.history_ts[0], message.history_ts[1] = pair
    with pytest.raises(ValidationError) as refused:
        request_from_columns(message, ml100k.schema.request_types())
    assert refused.value.field == "history_ts.0"
