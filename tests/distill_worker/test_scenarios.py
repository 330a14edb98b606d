"""One worker per scenario over one sample log and one teacher: each trains its scenario's student view on the
requests that scenario served (its own consumer group and trainer lease), publishes into its scenario's
registry and promotes there; the other scenario's live version is untouched."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from distill_worker.batch import run_batch
from distill_worker.settings import DistillConfig, GateConfig, StreamConfig, TeacherClientSettings, WorkerSettings
from distill_worker.stream import stream_main
from distill_worker.stream.consumer import ScenarioFilter
from distill_worker.student import BATCH_STUDENT
from recdistill.core.artifact import read_manifest, read_state
from recdistill.core.contracts.records import SampledRequest
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.errors import UnknownScenarioError
from recdistill.core.features.spec import ScenarioSpec
from recdistill.core.places import ScenarioPlace
from tests.conftest import RunningTriton
from tests.distill_worker.test_stream_phase import _written
from tests.student_server.conftest import TOKEN, make_settings, run_server

pytestmark = pytest.mark.e2e


async def test_each_scenario_trains_and_promotes_its_own_student(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    samples, state_dir = tmp_path / "samples", tmp_path / "worker"
    server_settings = make_settings(registry, tmp_path, sampling_rate=1.0)
    url = f"http://{server_settings.host}:{server_settings.port}"
    base = WorkerSettings(data=ml100k.directory, registry=registry, state_dir=state_dir, server_url=url,
                          admin_token=TOKEN, max_train_events=2_000, max_holdout_events=1_000, sample_log=samples,
                          gate=GateConfig(auc_tolerance=1.0, holdout_events=500),
                          teacher=TeacherClientSettings(url=triton_teacher.grpc_url, teacher_version="tiny-1"),
                          distill=DistillConfig(epochs=1, patience=1),
                          stream=StreamConfig(join_window_s=0.0, export_every=10))
    related = base.model_copy(update={"scenario": "related", "task": "ctr"})
    events = ml100k.split("test")[300:340].tolist()
    async with run_server(server_settings) as server, httpx.AsyncClient(base_url=server.http_url) as client:
        batch = await run_batch(related)
        for index, event in enumerate(events):
            route = "/v1/rank" if index % 2 else "/v1/scenarios/related/rank"
            assert (await client.post(route, json=ml100k.to_request(event, "slate", negatives=9))).status_code == 200
        await _written(samples, len(events))
        related_report, related_model = await stream_main(related, steps=1)
        home_report, home_model = await stream_main(base, steps=1)
        listed = {name: (await client.get("/admin/versions", params={"scenario": name},
                                          headers={"Authorization": f"Bearer {TOKEN}"})).json()
                  for name in ("home", "related")}
    related_root = registry / "scenarios" / "related"
    assert batch.task == "ctr"
    assert batch.published is not None
    assert batch.published.version is not None
    assert read_manifest(related_root, batch.published.version).scenario == "related"
    assert (state_dir / "scenarios" / "related" / BATCH_STUDENT).exists()
    assert not (state_dir / BATCH_STUDENT).exists()  # the first scenario's place
    # Each trainer took the 20 requests its scenario served and left the other 20 to the other one.
    assert (related_report.examples_trained, related_report.other_scenario) == (20, 20)
    assert (home_report.examples_trained, home_report.other_scenario) == (20, 20)
    assert (related_model.view, home_model.view) == ("student_compact", "student")
    # Each published and promoted into its own registry; the server serves both.
    for name, root, report in (("related", related_root, related_report), ("home", registry, home_report)):
        assert report.versions_promoted, name
        assert read_state(root).active == report.versions_promoted[-1] == listed[name]["active"]
        assert {read_manifest(root, v).scenario for v in report.versions_promoted} == {name}
    # Their own consumer groups and trainer leases on the one file log.
    assert {p.name for p in samples.glob(".trainer*.lock")} == {".trainer.lock",
                                                                 ".trainer.distill-worker-related.lock"}


def test_an_unknown_scenario_is_refused_by_name(ml100k: PreparedDataset, tmp_path: Path) -> None:
    settings = WorkerSettings(data=ml100k.directory, registry=tmp_path / "registry", scenario="checkout")
    with pytest.raises(UnknownScenarioError, match="'checkout'.*'home', 'related'"):
        settings.target_registry(ml100k.schema)


def test_a_scenario_trains_on_what_it_served_and_on_its_traffic() -> None:
    def record(scenario: str | None, source: str | None = None) -> SampledRequest:
        return SampledRequest(request_id="r", ts=1.0, request_ts=1.0, model_version="v", sampling_probability=1.0,
                              request={}, scores=b"", positions=b"",
                              traffic_source=source, scenario=scenario)

    home = ScenarioFilter.of(ScenarioSpec(name="home", traffic=["home"]), ScenarioPlace("home", first=True))
    related = ScenarioFilter.of(ScenarioSpec(name="related", traffic=["related", "similar"]),
                                ScenarioPlace("related", first=False))
    everything = ScenarioFilter.of(ScenarioSpec(name="all"), ScenarioPlace("all", first=False))
    assert home.takes(record("home"))
    assert home.takes(record(None))
    assert not home.takes(record("related"))
    assert related.takes(record("home", source="similar"))  # its traffic, whoever served it
    assert not related.takes(record(None))
    assert not related.takes(record("home", source="home"))
    assert all(everything.takes(r) for r in (record("home"), record("related"), record(None)))


async def test_the_batch_window_is_labelled_once_for_every_scenario_through_the_label_log(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    """Two scenarios' batch phases on the same window, on different hosts (state dirs) sharing a label log: the
    second finds every label the first had the teacher give."""
    base = WorkerSettings(data=ml100k.directory, registry=registry, label_log=str(tmp_path / "labels"),
                          max_train_events=500, max_holdout_events=300, gate=GateConfig(auc_tolerance=1.0),
                          teacher=TeacherClientSettings(url=triton_teacher.grpc_url, teacher_version="tiny-1"),
                          distill=DistillConfig(epochs=1, patience=1))
    first = await run_batch(base.model_copy(update={"state_dir": tmp_path / "host-a"}))
    second = await run_batch(base.model_copy(update={"state_dir": tmp_path / "host-b", "scenario": "related"}))
    assert first.label_hit_rate == 0.0
    assert second.label_hit_rate == 1.0
    assert not (tmp_path / "host-a" / "labels.sqlite").exists()
    assert second.published is not None
    assert second.published.version is not None
    assert read_manifest(registry / "scenarios" / "related", second.published.version).scenario == "related"
