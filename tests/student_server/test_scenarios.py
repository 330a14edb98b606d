"""One server, every scenario the schema declares: each with its own registry, active version, holdback and
swaps, chosen by route (HTTP) or field (gRPC); unknown scenarios are a 404 / NOT_FOUND naming
them; metrics carry the scenario; sampled records say which scenario served them. The registry (tests/conftest.py)
serves the shipped MovieLens schema's `home` (v1, v2) and `related` (r1, r2, on its compact view)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from recdistill.core._proto import ranking_pb2_grpc
from recdistill.core.artifact import ArtifactError, check_version_name
from recdistill.core.contracts.rank_grpc import request_from_dict
from recdistill.core.contracts.records import SampledRequest
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.errors import UnknownScenarioError
from recdistill.core.features.encoder import Encoder
from recdistill.core.features.spec import SchemaError, parse_schema_spec
from recdistill.core.places import ScenarioPlace
from tests.student_server.conftest import TOKEN, make_settings, onnx_scores, run_server, sampled_records

EXAMPLE = Path(__file__).parents[2] / "examples" / "rank_request.movielens-100k.json"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SHIPPED = Path(__file__).parents[2] / "recdistill" / "schemas" / "movielens-100k.toml"


@pytest.mark.integration
async def test_each_scenario_is_served_by_its_own_version_and_view(registry: Path, tmp_path: Path,
                                                                   ml100k: PreparedDataset) -> None:
    body = json.loads(EXAMPLE.read_text())
    settings = make_settings(registry, tmp_path, sampling_rate=1.0)
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.http_url) as client, \
            grpc.aio.insecure_channel(server.grpc_target) as channel:
        stub = ranking_pb2_grpc.RankingStub(channel)
        default = (await client.post("/v1/rank", json=body)).json()
        related = (await client.post("/v1/scenarios/related/rank", json=body)).json()
        by_source = (await client.post("/v1/rank", json=body, headers={"x-traffic-source": "related"})).json()
        message = request_from_dict(body)
        message.scenario = "related"
        reply = await stub.Rank(message)
        ready = (await client.get("/readyz")).json()
    assert (default["scenario"], default["model_version"]) == ("home", "v1")
    assert (related["scenario"], related["model_version"]) == ("related", "r1")
    # A traffic source chooses no scenario (it says which trainers take the sampled request).
    assert (by_source["scenario"], by_source["model_version"]) == ("home", "v1")
    assert (reply.scenario, reply.model_version) == ("related", "r1")
    assert ready == {"ready": True, "model_version": "v1", "scenarios": {"home": "v1", "related": "r1"}}
    # Each scored by its own model on its own view's tensors.
    request = ml100k.schema.parse_request(body)
    for view, version, root, answer in (("student", "v1", registry, default),
                                        ("student_compact", "r1", registry / "scenarios" / "related",
                                         related)):
        tensors, _ = Encoder(ml100k.schema, view).encode_requests([request])
        np.testing.assert_allclose(answer["scores"], onnx_scores(root, version, tensors)[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(list(reply.scores), related["scores"], rtol=0, atol=1e-6)
    records = [r for r in sampled_records(tmp_path / "samples") if isinstance(r, SampledRequest)]
    assert [(r.scenario, r.model_version) for r in records] == [("home", "v1"), ("related", "r1"), ("home", "v1"),
                                                                ("related", "r1")]


@pytest.mark.integration
async def test_a_scenario_registry_that_cannot_be_made_serves_nothing_and_the_server_starts(
        registry: Path, tmp_path: Path) -> None:
    """Replicas mount the registry read-only (compose, the chart): a scenario nothing was published to yet has no
    folder, and the server must not need to make one. Here `scenarios` is a file, so the folder cannot be made."""
    body = json.loads(EXAMPLE.read_text())
    shutil.rmtree(registry / "scenarios")
    (registry / "scenarios").write_text("not a folder")
    async with run_server(make_settings(registry, tmp_path)) as server, \
            httpx.AsyncClient(base_url=server.http_url) as client:
        ranked = await client.post("/v1/rank", json=body)
        related = await client.post("/v1/scenarios/related/rank", json=body)
        listed = await client.get("/admin/versions", params={"scenario": "related"}, headers=AUTH)
        ready = (await client.get("/readyz")).json()
    assert (ranked.status_code, ranked.json()["model_version"]) == (200, "v1")
    assert related.status_code == 503, related.text
    assert (listed.status_code, listed.json()["versions"], listed.json()["active"]) == (200, [], None)
    assert ready["scenarios"] == {"home": "v1", "related": None}


@pytest.mark.integration
async def test_an_unknown_scenario_is_not_found_by_name(registry: Path, tmp_path: Path) -> None:
    body = json.loads(EXAMPLE.read_text())
    async with run_server(make_settings(registry, tmp_path)) as server, \
            httpx.AsyncClient(base_url=server.http_url) as client, \
            grpc.aio.insecure_channel(server.grpc_target) as channel:
        http = await client.post("/v1/scenarios/checkout/rank", json=body)
        admin = await client.get("/admin/versions", params={"scenario": "checkout"}, headers=AUTH)
        message = request_from_dict(body)
        message.scenario = "checkout"
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await ranking_pb2_grpc.RankingStub(channel).Rank(message)
        metrics = (await client.get("/metrics")).text
        spec = (await client.get("/openapi.json")).json()
    assert (http.status_code, admin.status_code, failed.value.code()) == (404, 404, grpc.StatusCode.NOT_FOUND)
    for said in (http.json()["error"], admin.json()["error"], failed.value.details() or ""):
        assert "'checkout'" in said
        assert "related" in said
    # The label is the declared set's "unknown", never the name the request sent.
    assert 'scenario="unknown",status="404"' in metrics
    assert 'scenario="unknown",status="NOT_FOUND"' in metrics
    assert "checkout" not in metrics
    parameter = spec["paths"]["/v1/scenarios/{scenario}/rank"]["post"]["parameters"][0]
    assert parameter["schema"]["enum"] == ["home", "related"]


@pytest.mark.integration
async def test_swaps_and_holdbacks_are_per_scenario(registry: Path, tmp_path: Path) -> None:
    body = json.loads(EXAMPLE.read_text())
    async with run_server(make_settings(registry, tmp_path)) as server, \
            httpx.AsyncClient(base_url=server.http_url, headers=AUTH) as client:
        related = {"scenario": "related"}
        listed = (await client.get("/admin/versions", params=related)).json()
        swapped = await client.post("/admin/versions/r2/activate", params=related)
        cross = await client.post("/admin/versions/v2/activate", params=related)  # another scenario's version
        held = await client.put("/admin/holdback", params=related,
                                json={"version": "r1", "share": 0.5, "salt": "s"})
        users = {}
        for user in range(40):
            body["user"]["user_id"] = str(user)
            users[user] = (await client.post("/v1/scenarios/related/rank", json=body)).json()["model_version"]
        home = (await client.post("/v1/rank", json=body)).json()["model_version"]
        home_list = (await client.get("/admin/versions")).json()
        metrics = (await client.get("/metrics")).text
    assert (listed["scenario"], [v["version"] for v in listed["versions"]]) == ("related", ["r1", "r2"])
    assert (swapped.status_code, swapped.json()["version"]) == (200, "r2")
    assert cross.status_code == 404  # v2 lives in home's registry, not related's
    assert held.status_code == 200
    assert set(users.values()) == {"r1", "r2"}  # the A/B test splits related's users, by user
    assert (home, home_list["active"], home_list["holdback"]) == ("v1", "v1", None)
    assert json.loads((registry / "scenarios" / "related" / "state.json").read_text())["active"] == "r2"
    assert json.loads((registry / "state.json").read_text())["active"] == "v1"
    assert 'recdistill_active_version_info{scenario="related",version="r2"} 1.0' in metrics
    assert 'recdistill_active_version_info{scenario="home",version="v1"} 1.0' in metrics


@pytest.mark.integration
async def test_a_version_trained_for_another_scenario_is_refused(registry: Path,
                                                                 tmp_path: Path) -> None:
    related = registry / "scenarios" / "related"
    shutil.copytree(registry / "v2", related / "v2")  # a home version dropped into related
    # One whose manifest names no scenario (`scenario: null`: the first, home) was staged and served there.
    shutil.copytree(registry / "v1", related / "v1")
    manifest = json.loads((related / "v1" / "manifest.json").read_text())
    del manifest["scenario"]
    (related / "v1" / "manifest.json").write_text(json.dumps(manifest))
    async with run_server(make_settings(registry, tmp_path)) as server, \
            httpx.AsyncClient(base_url=server.http_url, headers=AUTH) as client, \
            grpc.aio.insecure_channel(server.grpc_target) as channel:
        refused = await client.post("/admin/versions/v2/stage", params={"scenario": "related"})
        unnamed = await client.post("/admin/versions/v1/stage", params={"scenario": "related"})
        message = request_from_dict(json.loads(EXAMPLE.read_text()))
        message.scenario = "x" * 200_000  # a huge unknown name: NOT_FOUND, and not echoed back whole
        with pytest.raises(grpc.aio.AioRpcError) as huge:
            await ranking_pb2_grpc.RankingStub(channel).Rank(message)
        long_http = await client.post(f"/v1/scenarios/{'y' * 5_000}/rank", json=json.loads(EXAMPLE.read_text()))
    assert refused.status_code == 422
    assert "trained for scenario 'home'" in refused.json()["error"]
    assert unnamed.status_code == 422
    assert "trained for scenario 'home'" in unnamed.json()["error"]
    assert huge.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(huge.value.details() or "") < 2_000
    assert "200000 characters" in (huge.value.details() or "")
    assert long_http.status_code == 404
    assert len(long_http.text) < 2_000


def test_scenario_layout_and_names(ml100k: PreparedDataset, tmp_path: Path) -> None:
    with pytest.raises(UnknownScenarioError, match="'checkout'.*home"):
        ScenarioPlace.of(ml100k.schema, "checkout")
    with pytest.raises(ArtifactError, match="other scenarios"):
        check_version_name("scenarios")
    # Every name a scenario goes by, from one place: the first keeps the names it had before scenarios.
    home, related = ScenarioPlace.every(ml100k.schema)
    assert (home, ScenarioPlace.of(ml100k.schema)) == (ScenarioPlace("home", first=True),) * 2
    assert (home.registry(tmp_path), home.state(tmp_path / "s")) == (tmp_path, tmp_path / "s")
    assert (home.consumer_group, home.store_prefix) == ("distill-worker", "recdistill:registry")
    assert related.registry(tmp_path) == tmp_path / "scenarios" / "related"
    assert related.state(tmp_path / "s") == tmp_path / "s" / "scenarios" / "related"
    assert (related.consumer_group, related.store_prefix) == ("distill-worker-related",
                                                              "recdistill:registry:scenario:related")
    assert (home.serves(None), home.serves("home"), home.serves("related")) == (True, True, False)
    assert (related.serves(None), related.serves("related")) == (False, True)
    assert [s.name for s in ml100k.schema.scenarios] == ["home", "related"]
    assert ml100k.schema.scenario().name == "home"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace('name = "related"', 'name = "home"'), "duplicate scenario name"),
    (lambda t: t.replace('view = "student_compact"', 'view = "student_wide"'), "not a student view"),
    (lambda t: t.replace('view = "student_compact"', 'view = "teacher"'), "not a student view"),
    (lambda t: t.replace("ctr = true", "ctr = false").replace('task = "slate"\nview = "student_compact"',
                                                               'task = "ctr"\nview = "student_compact"'),
     "a ctr task, which `tasks` does not declare"),
    (lambda t: t.replace("history_len = 20000", "history_len = 8"),
     "scenario `home`: the teacher cannot serve its view `student` \\(it reads 10 history events, the teacher's "
     "view 8\\)"),
    (lambda t: t.replace("history_len = 20000", 'history_len = 20000\nfeatures = ["genres"]'),
     "teacher cannot serve its view `student` \\(its features \\['age_bucket', 'gender', 'occupation', "
     "'release_year', 'zip_prefix'\\] are not in the teacher's view"),
])
def test_a_scenario_the_schema_cannot_serve_is_refused_naming_it(edit, message: str) -> None:  # noqa: ANN001
    text = SHIPPED.read_text()
    parse_schema_spec(text)  # the shipped file is valid
    with pytest.raises(SchemaError, match=message):
        parse_schema_spec(edit(text), "edited.toml")


def test_a_schema_without_scenarios_serves_one_default() -> None:
    text = SHIPPED.read_text()
    spec = parse_schema_spec(text[:text.index("# Two surfaces")])
    assert [(s.name, s.task, s.view) for s in spec.served_scenarios] == [("default", "slate", "student")]
