"""Ranking over HTTP and gRPC against real uvicorn and grpc.aio servers."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from recdistill.core._proto import ranking_pb2, ranking_pb2_grpc
from recdistill.core.contracts.rank_grpc import request_from_dict
from recdistill.core.contracts.records import RECORD_FORMAT, FeedbackRecord, SampledRequest
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.features.encoder import Encoder
from recdistill.core.samplelog import SampleLog
from tests.student_server.conftest import TOKEN, make_settings, onnx_scores, run_server, sampled_records

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).parents[2] / "examples" / "rank_request.movielens-100k.json"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_http_and_grpc_agree_with_onnx_runtime(registry: Path, tmp_path: Path,
                                                     ml100k: PreparedDataset) -> None:
    body = json.loads(EXAMPLE.read_text())
    async with run_server(make_settings(registry, tmp_path)) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as client:
            http = (await client.post("/v1/rank", content=EXAMPLE.read_bytes())).json()
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            reply = await ranking_pb2_grpc.RankingStub(channel).Rank(request_from_dict(body))
    tensors, _ = Encoder(ml100k.schema, "student").encode_requests([ml100k.schema.parse_request(body)])
    expected = onnx_scores(registry, "v1", tensors)[0]
    assert http["model_version"] == reply.model_version == "v1"
    # Each request gets the server's own id; the client's is kept beside it (never a key: clients reuse them).
    assert http["client_request_id"] == body["request_id"]
    assert len({http["request_id"], reply.request_id, body["request_id"]}) == 3
    np.testing.assert_allclose(http["scores"], expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(list(reply.scores), expected, rtol=0, atol=1e-6)
    assert http["ranking"] == list(reply.ranking)
    order = np.argsort(-np.asarray(http["scores"]), kind="stable")
    assert http["ranking"] == [str(body["candidates"][i]["item_id"]) for i in order]


async def test_swap_under_load_fails_no_request(registry: Path, tmp_path: Path) -> None:
    body = EXAMPLE.read_bytes()
    proto = request_from_dict(json.loads(body))
    limits = httpx.Limits(max_connections=64)
    async with run_server(make_settings(registry, tmp_path)) as server, \
            httpx.AsyncClient(base_url=server.http_url, limits=limits, timeout=30) as client, \
            grpc.aio.insecure_channel(server.grpc_target) as channel:
        stub = ranking_pb2_grpc.RankingStub(channel)

        async def http_call() -> str:
            response = await client.post("/v1/rank", content=body)
            assert response.status_code == 200, response.text
            return response.json()["model_version"]

        async def grpc_call() -> str:
            return (await stub.Rank(proto)).model_version

        swapped = asyncio.Event()

        async def swap() -> None:
            await asyncio.sleep(0.05)
            response = await client.post("/admin/versions/v2/activate", headers=AUTH)
            assert response.status_code == 200, response.text
            swapped.set()

        async def caller(i: int) -> list[str]:
            """Requests back to back (HTTP and gRPC alternately) until one has started after the swap."""
            seen = []
            while True:
                after_swap = swapped.is_set()
                seen.append(await (http_call() if (i + len(seen)) % 2 else grpc_call()))
                if after_swap:
                    return seen

        *per_caller, _ = await asyncio.gather(*(caller(i) for i in range(16)), swap())
    versions = [version for seen in per_caller for version in seen]
    assert set(versions) <= {"v1", "v2"}
    assert "v1" in versions, "requests before the swap are served by v1"
    assert all(seen[-1] == "v2" for seen in per_caller), "a request sent after the swap is served by v2"


async def test_active_version_survives_a_restart(registry: Path, tmp_path: Path) -> None:
    settings = make_settings(registry, tmp_path)
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.http_url) as client:
        assert (await client.post("/admin/versions/v2/activate", headers=AUTH)).status_code == 200
    async with run_server(make_settings(registry, tmp_path)) as server, \
            httpx.AsyncClient(base_url=server.http_url) as client:
        ready = await client.get("/readyz")
        assert ready.json() == {"ready": True, "model_version": "v2", "scenarios": {"home": "v2", "related": "r1"}}


async def test_not_ready_without_an_active_version(registry: Path, tmp_path: Path) -> None:
    (registry / "state.json").unlink()
    async with run_server(make_settings(registry, tmp_path)) as server, \
            httpx.AsyncClient(base_url=server.http_url) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        response = await client.post("/v1/rank", content=EXAMPLE.read_bytes())
        assert response.status_code == 503
        assert "no model version is active" in response.json()["error"]


async def test_sampled_requests_and_feedback_reach_the_sample_log(registry: Path, tmp_path: Path) -> None:
    settings = make_settings(registry, tmp_path, sampling_rate=1.0)
    body = json.loads(EXAMPLE.read_text())
    async with run_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as client:
            for i in range(5):
                assert (await client.post("/v1/rank", json=body | {"request_id": f"r{i}"})).status_code == 200
            feedback = {"request_id": "r3", "item_id": body["candidates"][0]["item_id"], "label": 1, "ts": 5.0}
            assert (await client.post("/v1/feedback", json=feedback)).status_code == 202
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            await ranking_pb2_grpc.RankingStub(channel).Feedback(
                ranking_pb2.FeedbackRequest(request_id="r4", item_id="50", label=0.0))
    records = sampled_records(tmp_path / "samples")
    requests = [r for r in records if isinstance(r, SampledRequest)]
    feedbacks = [r for r in records if isinstance(r, FeedbackRecord)]
    assert [r.client_request_id for r in requests] == [f"r{i}" for i in range(5)]
    assert len({r.request_id for r in requests}) == 5
    first = requests[0]
    assert first.model_version == "v1"
    assert first.format == RECORD_FORMAT
    assert first.sampling_probability == 1.0
    assert len(first.score_array) == len(first.position_array) == 100
    assert sorted(first.position_array.tolist()) == list(range(100))
    assert first.request["history"][0]["item_id"] == body["history"][0]["item_id"]
    assert [(f.request_id, f.label) for f in feedbacks] == [("r3", 1.0), ("r4", 0.0)]


async def test_long_histories_are_sampled_at_their_own_rate_and_say_so(registry: Path, tmp_path: Path) -> None:
    settings = make_settings(registry, tmp_path, sampling_rate=1.0, sampling_rate_long_history=0.5,
                             long_history_events=40)
    body = json.loads(EXAMPLE.read_text())  # 44 history events: a long history here
    short = body | {"history": body["history"][:10]}
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.http_url) as client:
        for i in range(200):
            request = (short if i % 2 else body) | {"request_id": f"r{i}"}
            assert (await client.post("/v1/rank", json=request)).status_code == 200
    requests = [r for r in sampled_records(tmp_path / "samples") if isinstance(r, SampledRequest)]
    long_sampled = [r for r in requests if len(r.request["history"]) == 44]
    short_sampled = [r for r in requests if len(r.request["history"]) == 10]
    assert len(short_sampled) == 100
    assert {r.sampling_probability for r in short_sampled} == {1.0}
    assert {r.sampling_probability for r in long_sampled} == {0.5}
    assert 25 <= len(long_sampled) <= 75  # Binomial(100, 0.5): outside this with probability < 1e-6


async def test_metrics_expose_latency_versions_and_samples(registry: Path, tmp_path: Path) -> None:
    async with run_server(make_settings(registry, tmp_path, sampling_rate=1.0)) as server, \
            httpx.AsyncClient(base_url=server.http_url) as client:
        await client.post("/v1/rank", content=EXAMPLE.read_bytes())
        await client.post("/admin/versions/v2/activate", headers=AUTH)
        await client.post("/admin/rollback", headers=AUTH)
        text = (await client.get("/metrics")).text
    assert 'recdistill_request_seconds_bucket{endpoint="rank",le="0.01",protocol="http",scenario="home"}' in text
    assert 'recdistill_requests_total{endpoint="rank",protocol="http",scenario="home",status="200"}' in text
    assert 'recdistill_active_version_info{scenario="home",version="v1"} 1.0' in text
    assert "recdistill_model_swaps_total" in text
    assert "recdistill_model_rollbacks_total" in text
    assert "recdistill_candidates_per_request_bucket" in text
    assert "recdistill_sampled_records_total" in text


async def test_openapi_documents_every_endpoint(registry: Path, tmp_path: Path) -> None:
    async with run_server(make_settings(registry, tmp_path)) as server, \
            httpx.AsyncClient(base_url=server.http_url) as client:
        spec = (await client.get("/openapi.json")).json()
    paths = set(spec["paths"])
    assert {"/v1/rank", "/v1/feedback", "/healthz", "/readyz", "/metrics", "/admin/versions",
            "/admin/versions/{version}/stage", "/admin/versions/{version}/activate", "/admin/rollback",
            "/admin/versions/{version}"} <= paths
    body_ref = spec["paths"]["/v1/rank"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request_schema = spec["components"]["schemas"][body_ref.rsplit("/", 1)[-1]]
    assert {"user", "candidates"} <= set(request_schema["required"])
    assert "HistoryEvent" in json.dumps(request_schema["properties"]["history"])
    assert "RankResponse" in json.dumps(spec["paths"]["/v1/rank"]["post"]["responses"]["200"])


async def test_a_full_feedback_queue_answers_503_with_retry_after(registry: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injected: a disk so slow that the sample-log writer is stuck in its first write."""
    entered, release = threading.Event(), threading.Event()
    real_append = SampleLog.append

    def stuck_append(self: SampleLog, payloads: list[bytes]) -> int:
        entered.set()
        release.wait(30)
        return real_append(self, payloads)

    monkeypatch.setattr(SampleLog, "append", stuck_append)
    settings = make_settings(registry, tmp_path, sample_queue=2)
    feedback = {"request_id": "r", "item_id": "1", "label": 1}
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        sampler = server.server.config.loaded_app.app.api.state.service.sampler  # type: ignore[union-attr]
        first = asyncio.create_task(client.post("/v1/feedback", json=feedback | {"item_id": "0"}))
        assert await asyncio.to_thread(entered.wait, 10)
        queued = [asyncio.create_task(client.post("/v1/feedback", json=feedback | {"item_id": str(i)}))
                  for i in (1, 2)]
        while sampler.queued < 2:
            await asyncio.sleep(0.01)
        refused = await client.post("/v1/feedback", json=feedback | {"item_id": "3"})
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert "retry later" in refused.json()["error"]
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await ranking_pb2_grpc.RankingStub(channel).Feedback(
                    ranking_pb2.FeedbackRequest(request_id="r", item_id="4", label=1.0))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        accepted = [await task for task in (first, *queued)]
        assert [r.status_code for r in accepted] == [202, 202, 202]
    monkeypatch.setattr(SampleLog, "append", real_append)
    stored = [r for r in sampled_records(tmp_path / "samples") if isinstance(r, FeedbackRecord)]
    # Every acknowledged record is stored, every refused one is not: 3 written = 3 read, 2 refused.
    assert sorted(r.item_id for r in stored) == ["0", "1", "2"]


async def test_a_restarted_server_appends_to_its_own_partition(registry: Path, tmp_path: Path) -> None:
    body = json.loads(EXAMPLE.read_text())
    for round_ in range(2):
        settings = make_settings(registry, tmp_path, sampling_rate=1.0)
        async with run_server(settings) as server, httpx.AsyncClient(base_url=server.http_url) as client:
            assert (await client.post("/v1/rank", json=body | {"request_id": f"run{round_}"})).status_code == 200
    partitions = sorted(p.name for p in (tmp_path / "samples").iterdir() if p.is_dir())
    assert partitions == ["test-0"]
    assert [r.client_request_id for r in sampled_records(tmp_path / "samples")] == ["run0", "run1"]


async def test_an_idle_connection_outlives_a_clients_own_keep_alive_expiry(registry: Path, tmp_path: Path) -> None:
    """At uvicorn's default 5 s, the same as httpx's expiry, a client could send on a connection in the
    instant the server closed it and read a reset (the likely cause of an httpx.ReadError on a reused connection
    in a fresh-clone CI run; not reproduced on an idle machine). The server now
    keeps an idle connection longer than the clients in front of it do."""
    settings = make_settings(registry, tmp_path)
    assert settings.keep_alive_s > httpx.Limits().keepalive_expiry + 5
    async with run_server(settings) as server:
        reader, writer = await asyncio.open_connection(settings.host, server.settings.port)
        request = f"GET /healthz HTTP/1.1\r\nhost: {settings.host}\r\n\r\n".encode()
        try:
            for attempt in range(2):
                if attempt:
                    await asyncio.sleep(5.5)  # past uvicorn's and httpx's 5 s
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert head.startswith(b"HTTP/1.1 200"), head
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                await reader.readexactly(length)
        finally:
            writer.close()
