"""The server follows its registry's feature schema: the e-commerce schema serves over HTTP and gRPC with
the same scores as its ONNX model, bad fields are named, and a model built on another schema is refused
at staging with both hashes named while the active version keeps serving."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import torch

from distill_worker.export import export_onnx
from distill_worker.student import StudentConfig, StudentModel
from recdistill.core._proto import ranking_pb2_grpc
from recdistill.core.artifact import publish_version, write_state
from recdistill.core.contracts.rank_grpc import request_from_dict
from recdistill.core.contracts.registry import RegistryState
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.features.encoder import Encoder
from tests.student_server.conftest import TOKEN, make_settings, onnx_scores, run_server

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _model(dataset: PreparedDataset, seed: int) -> bytes:
    encoder = Encoder(dataset.schema, "student")
    probe, _ = encoder.assemble(dataset.contexts(encoder, dataset.split("test", "slate")[:16], "slate"))
    torch.manual_seed(seed)
    return export_onnx(StudentModel(dataset.schema, StudentConfig()).eval(), probe)


@pytest.fixture
def ecommerce_registry(ecommerce: PreparedDataset, tmp_path: Path) -> Path:
    registry = tmp_path / "ecommerce-registry"
    registry.mkdir()
    ecommerce.schema.save(registry / "features.json")
    publish_version(registry, "e1", _model(ecommerce, 1), ecommerce.schema.hash)
    write_state(registry, RegistryState(active="e1"))
    return registry


async def test_the_ecommerce_schema_serves_over_http_and_grpc(ecommerce: PreparedDataset, ecommerce_registry: Path,
                                                              tmp_path: Path) -> None:
    encoder = Encoder(ecommerce.schema, "student")
    events = ecommerce.split("test", "slate")[:5].tolist()
    bodies = [ecommerce.to_request(e, "slate") for e in events]
    async with run_server(make_settings(ecommerce_registry, tmp_path, sampling_rate=1.0)) as server, \
            httpx.AsyncClient(base_url=server.http_url) as client, \
            grpc.aio.insecure_channel(server.grpc_target) as channel:
        stub = ranking_pb2_grpc.RankingStub(channel)
        for body in bodies:
            response = await client.post("/v1/rank", json=body)
            assert response.status_code == 200, response.text
            tensors, _ = encoder.encode_requests([ecommerce.schema.parse_request(body)])
            expected = onnx_scores(ecommerce_registry, "e1", tensors)[0]
            np.testing.assert_allclose(response.json()["scores"], expected, rtol=1e-5, atol=1e-6)
            reply = await stub.Rank(request_from_dict(body), timeout=30)
            np.testing.assert_allclose(list(reply.scores), expected, rtol=1e-5, atol=1e-6)
        # A field the schema does not declare, and a wrong type, are named on both protocols.
        bad = bodies[0] | {"context": bodies[0]["context"] | {"weather": "rain"}}
        response = await client.post("/v1/rank", json=bad)
        assert (response.status_code, response.json()["field"]) == (422, "context.weather")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Rank(request_from_dict(bad), timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "context.weather" in caught.value.details()
        nan_age = request_from_dict(bodies[0])
        nan_age.user.features["age"].number_value = float("nan")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Rank(nan_age, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "user.age" in caught.value.details()
        response = await client.post("/v1/rank", json=bodies[0] | {"user": bodies[0]["user"] | {"age": "old"}})
        assert (response.status_code, response.json()["field"]) == (422, "user.age")
        # The OpenAPI document describes this schema's request.
        spec = (await client.get("/openapi.json")).json()
        assert "device" in str(spec["components"]["schemas"]["RequestContext"])


async def test_a_model_of_another_schema_is_refused_naming_both_hashes(
    ml100k: PreparedDataset, ecommerce: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    publish_version(registry, "from-ecommerce", _model(ecommerce, 3), ecommerce.schema.hash)
    async with run_server(make_settings(registry, tmp_path)) as server, \
            httpx.AsyncClient(base_url=server.http_url) as client:
        response = await client.post("/admin/versions/from-ecommerce/activate", headers=AUTH)
        assert response.status_code == 422, response.text
        message = response.json()["error"]
        assert ecommerce.schema.hash in message
        assert ml100k.schema.hash in message
        served = await client.post("/v1/rank", json=ml100k.to_request(int(ml100k.split("test")[0]), "slate"))
        assert (served.status_code, served.json()["model_version"]) == (200, "v1")


def test_a_registry_for_one_schema_refuses_to_mix_in_another(ml100k: PreparedDataset, ecommerce: PreparedDataset,
                                                             registry: Path, tmp_path: Path) -> None:
    from recdistill.core.artifact import ensure_registry
    from recdistill.core.errors import SchemaMismatchError

    copy = tmp_path / "copy"
    shutil.copytree(registry, copy)
    with pytest.raises(SchemaMismatchError, match=ecommerce.schema.hash):
        ensure_registry(copy, ecommerce.schema)
