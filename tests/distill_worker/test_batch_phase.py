"""The batch phase against a real Triton teacher and a real student server."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import httpx
import msgspec
import numpy as np
import pytest
import torch

from distill_worker.batch import BatchData, run_batch
from distill_worker.export import export_onnx
from distill_worker.promote import publish_and_promote
from distill_worker.settings import DistillConfig, GateConfig, TeacherClientSettings, WorkerSettings
from distill_worker.student import StudentConfig, StudentModel
from recdistill.core.artifact import publish_version, read_manifest, read_state, write_state
from recdistill.core.contracts.registry import RegistryState
from recdistill.core.contracts.worker import DataWindow
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.features.encoder import Encoder
from recdistill.core.training import EncodedSplit, fit
from tests.conftest import RunningTriton
from tests.student_server.conftest import TOKEN, make_settings, run_server

pytestmark = pytest.mark.e2e


async def test_batch_phase_labels_trains_gates_and_promotes(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    settings = WorkerSettings(data=ml100k.directory, registry=registry, state_dir=tmp_path / "state",
                              max_train_events=3_000, max_holdout_events=2_000, admin_token=TOKEN,
                              teacher=TeacherClientSettings(url=triton_teacher.grpc_url, teacher_version="tiny-1"),
                              distill=DistillConfig(epochs=2, patience=1), gate=GateConfig(auc_tolerance=1.0))
    async with run_server(make_settings(registry, tmp_path)) as server, \
            httpx.AsyncClient(base_url=server.http_url) as client:
        settings.server_url = server.http_url
        report = await run_batch(settings, StudentConfig())
        assert report.published is not None
        version = report.published.version
        assert version is not None, report.published.gate
        served = await client.post("/v1/rank", content=(Path(__file__).parents[2] / "examples" /
                                                        "rank_request.movielens-100k.json").read_bytes())
        assert served.json()["model_version"] == version
    assert read_state(registry).active == version
    manifest = read_manifest(registry, version)
    assert manifest.teacher_version == "tiny-1"
    assert manifest.metrics.parity_max_abs_diff <= 1e-5
    assert manifest.data_window == DataWindow(train_events=report.train_events)
    assert manifest.distill == asdict(settings.distill)
    assert report.published.gate.accepted
    assert report.label_hit_rate == 0.0
    assert report.debias is not None
    assert np.isfinite(report.debias.ece_after)
    assert report.test is not None
    assert np.isfinite(report.test["auc"])

    # A second labelling pass (another student, or a restart) is served from the store.
    again = await run_batch(settings.model_copy(update={"server_url": None,
                                                        "distill": DistillConfig(epochs=1, patience=1)}))
    assert again.label_hit_rate == 1.0


def test_a_worse_model_is_not_promoted(ml100k: PreparedDataset, registry: Path, tmp_path: Path) -> None:
    encoder = Encoder(ml100k.schema, "student")
    holdout = EncodedSplit.build(ml100k, encoder, "valid", "slate", limit=2_000)
    settings = WorkerSettings(data=ml100k.directory, registry=registry, state_dir=tmp_path / "state",
                              gate=GateConfig(auc_tolerance=0.0))
    # The active version: a student trained briefly on labels, so it ranks better than chance.
    torch.manual_seed(0)
    trained = StudentModel(ml100k.schema, StudentConfig())
    train = EncodedSplit.build(ml100k, encoder, "train", "slate", limit=4_000)
    fit(trained, train, holdout, lambda m, b: torch.nn.functional.binary_cross_entropy_with_logits(
        m.heads(**b.inputs)[0][b.mask], b.labels[b.mask]), lambda inputs: trained(**inputs), epochs=1,
        batch_size=256, lr=5e-3)
    probe, _ = encoder.assemble(holdout.contexts[:32])
    publish_version(registry, "trained", export_onnx(trained, probe), ml100k.schema.hash)
    write_state(registry, RegistryState(active="trained"))
    state_before = read_state(registry)
    # Worse than the active v1 by construction: every candidate gets the same score.
    torch.manual_seed(0)
    constant = StudentModel(ml100k.schema, StudentConfig())
    with torch.no_grad():
        for parameter in constant.serving_head.parameters():
            parameter.zero_()
    report = publish_and_promote(settings, constant.eval(), holdout, DataWindow(), {})
    version = report.version
    decision = report.gate.metrics.quality["active"]
    assert decision.version == "trained"
    assert decision.difference < 0
    assert not decision.non_inferior
    assert version is None
    assert any("holdout AUC vs the active version" in reason for reason in report.gate.reasons)
    assert read_state(registry) == state_before
    assert sorted(p.name for p in registry.iterdir() if p.is_dir()) == ["scenarios", "trained", "v1", "v2"]


def test_the_latency_gate_refuses_a_slow_model(ml100k: PreparedDataset, registry: Path, tmp_path: Path) -> None:
    holdout = EncodedSplit.build(ml100k, Encoder(ml100k.schema, "student"), "valid", "slate", limit=500)
    settings = WorkerSettings(data=ml100k.directory, registry=tmp_path / "empty-registry",
                              state_dir=tmp_path / "state", gate=GateConfig(latency_budget_ms=1e-6))
    model = StudentModel(ml100k.schema, StudentConfig()).eval()
    report = publish_and_promote(settings, model, holdout, DataWindow(), {})
    assert report.version is None
    assert any("p99" in reason for reason in report.gate.reasons)
    assert msgspec.json.encode(report)  # the reason is reportable as it is


def test_the_gate_holdout_is_disjoint_from_training_early_stopping_and_calibration(ml100k: PreparedDataset,
                                                                                 tmp_path: Path) -> None:
    settings = WorkerSettings(data=ml100k.directory, registry=tmp_path / "registry", state_dir=tmp_path / "state",
                              max_train_events=5_000, gate=GateConfig(holdout_events=1_500))
    data = BatchData.build(settings)
    gate, valid, train = set(data.gate.event_ids), set(data.valid.event_ids), set(data.train.event_ids)
    assert len(gate) == 1_500
    assert not gate & valid, "early stopping and calibration (the valid split here) never see the gate's events"
    assert not gate & train
    assert max(valid) < min(gate), "the gate holds the valid window's most recent events"
    assert data.valid.event_ids.size + 1_500 == ml100k.split("valid", "slate").size
