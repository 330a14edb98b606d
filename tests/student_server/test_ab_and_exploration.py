"""Online experiments on real servers: a holdback (simultaneous A/B split by user), the exploration slice
(served in a random order) and a logging policy by traffic source that no model reads."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from recdistill.core._proto import ranking_pb2_grpc
from recdistill.core.contracts.rank_grpc import request_from_dict
from recdistill.core.contracts.records import SampledRequest
from recdistill.core.contracts.registry import Holdback
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.features.encoder import Encoder
from recdistill.demo.valkey import LocalValkey
from tests.student_server.conftest import TOKEN, make_settings, onnx_scores, run_server, sampled_records

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).parents[2] / "examples" / "rank_request.movielens-100k.json"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _for_user(body: dict, user: int) -> dict:
    return body | {"user": body["user"] | {"user_id": user}, "request_id": f"u{user}-{time.monotonic_ns()}"}


async def _rank_all(server_http: str, grpc_target: str, bodies: list[dict]) -> list[tuple[str, list[float], str]]:
    """(version, scores, policy) of each body, sent at once: odd ones over gRPC, even ones over HTTP."""
    async with httpx.AsyncClient(base_url=server_http, timeout=30) as client, \
            grpc.aio.insecure_channel(grpc_target) as channel:
        stub = ranking_pb2_grpc.RankingStub(channel)

        async def one(index: int, body: dict) -> tuple[str, list[float], str]:
            if index % 2:
                reply = await stub.Rank(request_from_dict(body))
                return reply.model_version, list(reply.scores), reply.policy
            response = await client.post("/v1/rank", json=body)
            assert response.status_code == 200, response.text
            served = response.json()
            return served["model_version"], served["scores"], served["policy"]

        return await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))


async def test_a_holdback_serves_each_user_one_version_at_the_same_time(registry: Path, tmp_path: Path,
                                                                        ml100k: PreparedDataset) -> None:
    body = json.loads(EXAMPLE.read_text())
    tensors, _ = Encoder(ml100k.schema, "student").encode_requests([ml100k.schema.parse_request(body)])
    expected = {v: onnx_scores(registry, v, tensors)[0] for v in ("v1", "v2")}
    users = list(range(1, 81))
    holdback = Holdback(version="v1", share=0.4)
    settings = make_settings(registry, tmp_path)
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.http_url) as client:
        refused = await client.put("/admin/holdback", json={"version": "v1", "share": 0.4}, headers=AUTH)
        assert refused.status_code == 409, "the active version cannot be its own control"
        bad = await client.put("/admin/holdback", json={"version": "v1", "share": 1.5}, headers=AUTH)
        assert bad.status_code == 422
        assert bad.json()["field"] == "share", bad.text
        assert (await client.post("/admin/versions/v2/activate", headers=AUTH)).status_code == 200
        started = await client.put("/admin/holdback", json={"version": "v1", "share": 0.4}, headers=AUTH)
        assert started.status_code == 200, started.text
        # Twice per user, the two sends on different protocols, all at once (batches mix both versions).
        served = await _rank_all(server.http_url, server.grpc_target,
                                 [_for_user(body, u) for u in users] + [_for_user(body, u) for u in users[::-1]])
        listing = (await client.get("/admin/versions", headers=AUTH)).json()
        assert listing["holdback"]["version"] == "v1"
        assert listing["active"] == "v2"
        assert (await client.delete("/admin/versions/v1", headers=AUTH)).status_code == 409
    first, second = served[: len(users)], served[len(users):][::-1]
    for user, (version, scores, policy), (again, _, _) in zip(users, first, second, strict=True):
        assert version == again == ("v1" if holdback.holds(str(user)) else "v2"), user
        np.testing.assert_allclose(scores, expected[version], rtol=0, atol=1e-6)
        assert policy == "model"
    held = sum(v == "v1" for v, _, _ in first)
    assert 0 < held < len(users)
    assert abs(held / len(users) - 0.4) < 0.2
    # The holdback is in the registry's state: a restarted server keeps it, and ending it ends the split.
    async with run_server(make_settings(registry, tmp_path)) as server, \
            httpx.AsyncClient(base_url=server.http_url) as client:
        again = await _rank_all(server.http_url, server.grpc_target, [_for_user(body, u) for u in users])
        assert [v for v, _, _ in again] == [v for v, _, _ in first]
        assert (await client.delete("/admin/holdback", headers=AUTH)).json() == {"holdback": None, "format": 1}
        after = await _rank_all(server.http_url, server.grpc_target, [_for_user(body, u) for u in users])
    assert {v for v, _, _ in after} == {"v2"}


async def test_a_holdback_reaches_every_replica_of_a_fleet(registry: Path, tmp_path: Path,
                                                           valkey: LocalValkey) -> None:
    body = json.loads(EXAMPLE.read_text())
    users = list(range(1, 41))
    holdback = Holdback(version="v2", share=0.5, salt="fleet")
    first = make_settings(registry, tmp_path, registry_store=valkey.url, server_id="a")
    second = make_settings(registry, tmp_path, registry_store=valkey.url, server_id="b", state_poll_s=30)
    async with run_server(first) as a, run_server(second) as b, httpx.AsyncClient(base_url=a.http_url) as client:
        started = await client.put("/admin/holdback", json={"version": "v2", "share": 0.5, "salt": "fleet"},
                                   headers=AUTH)
        assert started.status_code == 200, started.text
        deadline = time.monotonic() + 10  # replica b polls every 30 s: only the notification can reach it in time
        while time.monotonic() < deadline:
            listing = (await client.get(f"{b.http_url}/admin/versions", headers=AUTH)).json()
            if listing["holdback"]:
                break
            await asyncio.sleep(0.05)
        assert listing["holdback"] == {"version": "v2", "share": 0.5, "salt": "fleet"}
        served = await _rank_all(b.http_url, b.grpc_target, [_for_user(body, u) for u in users])
    assert [v for v, _, _ in served] == ["v2" if holdback.holds(str(u)) else "v1" for u in users]


async def test_the_exploration_slice_is_served_at_random_and_logged_as_such(registry: Path, tmp_path: Path,
                                                                           ml100k: PreparedDataset) -> None:
    body = json.loads(EXAMPLE.read_text())
    settings = make_settings(registry, tmp_path, sampling_rate=1.0, exploration_rate=0.5)
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.http_url) as client:
        responses = []
        for i in range(80):
            response = await client.post("/v1/rank", json=body | {"request_id": f"r{i}"})
            assert response.status_code == 200
            responses.append(response.json())
        metrics = (await client.get("/metrics")).text
    records = {r.request_id: r for r in sampled_records(tmp_path / "samples") if isinstance(r, SampledRequest)}
    explored = [r for r in responses if r["policy"] == "random"]
    assert 16 <= len(explored) <= 64  # Binomial(80, 0.5): outside with probability < 1e-7
    assert f"recdistill_explored_requests_total {float(len(explored))}" in metrics
    item_ids = [str(c["item_id"]) for c in body["candidates"]]
    for response in responses:
        record = records[response["request_id"]]
        assert record.policy == response["policy"]
        assert sorted(response["ranking"]) == sorted(item_ids)
        by_score = [item_ids[i] for i in np.argsort(-np.asarray(response["scores"]), kind="stable")]
        assert (response["ranking"] == by_score) == (response["policy"] == "model")  # 100 items: never by chance
        assert [response["ranking"][p] for p in record.position_array] == item_ids  # the log holds what was served


async def test_sampling_by_traffic_source_reads_a_header_no_model_sees(registry: Path, tmp_path: Path) -> None:
    body = json.loads(EXAMPLE.read_text())
    settings = make_settings(registry, tmp_path, sampling_rate=1.0, sampling_rate_by_source={"search": 0.25})
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.http_url) as client, \
            grpc.aio.insecure_channel(server.grpc_target) as channel:
        stub = ranking_pb2_grpc.RankingStub(channel)
        for i in range(240):
            source = ("search", "home", None)[i % 3]
            request = body | {"request_id": f"r{i}"}
            if i % 2:
                metadata = (("x-traffic-source", source),) if source else None
                await stub.Rank(request_from_dict(request), metadata=metadata)
            else:
                headers = {"X-Traffic-Source": source} if source else {}
                assert (await client.post("/v1/rank", json=request, headers=headers)).status_code == 200
    records = [r for r in sampled_records(tmp_path / "samples") if isinstance(r, SampledRequest)]
    by_source: dict[str | None, list[SampledRequest]] = {}
    for record in records:
        by_source.setdefault(record.traffic_source, []).append(record)
    assert len(by_source["home"]) == len(by_source[None]) == 80  # sources without a rule: the usual rate
    assert {r.sampling_probability for r in by_source["search"]} == {0.25}
    assert {r.sampling_probability for r in by_source["home"] + by_source[None]} == {1.0}
    assert 5 <= len(by_source["search"]) <= 40  # Binomial(80, 0.25): outside with probability < 1e-5
    assert {int(r.client_request_id[1:]) % 2 for r in by_source["search"]} == {0, 1}  # both protocols read it
