"""Every typed contract round-trips through its wire form, and a file in a format this reader does not know is
refused with an error naming it (the sample-log records and the registry files have their own tests)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import msgspec
import numpy as np
import pytest
import torch

from recdistill.core.contracts.admin import (
    HoldbackState,
    ReplicaEntry,
    VersionChange,
    VersionDeleted,
    VersionEntry,
    VersionList,
    operator_schemas,
)
from recdistill.core.contracts.dataset import DATASET_FORMAT, DatasetManifest
from recdistill.core.contracts.demo import DEMO_REPORT_FORMAT, DemoDataset, DemoReport
from recdistill.core.contracts.deploy import DeployCheckReport, ImageBuild, Kill, Traffic
from recdistill.core.contracts.figures import (
    BucketFigures,
    Interval,
    SeedRun,
    StudentFigures,
    TaskFigures,
    TeacherFigures,
    TeacherSeed,
    TuningFigures,
    VariantFigures,
)
from recdistill.core.contracts.registry import Holdback, Manifest
from recdistill.core.contracts.teacher import TEACHER_MANIFEST_FORMAT, TeacherDataWindow, TeacherManifest
from recdistill.core.contracts.worker import (
    CALIBRATION_FORMAT,
    CHECKPOINT_FORMAT,
    BatchReport,
    Calibration,
    DataWindow,
    DebiasReport,
    Freshness,
    GateMetrics,
    GateVerdict,
    PublishResult,
    StandbyReport,
    StreamCheckpoint,
    StreamReport,
    StreamState,
)
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.errors import DataError

PUBLISHED = PublishResult(version="v-1",
                          gate=GateVerdict(accepted=True, metrics=GateMetrics(latency_p99_ms=0.4)),
                          promoted=True, anchored=False)


@pytest.mark.parametrize("value", [
    DataWindow(train_events=1_000),
    DataWindow(sampled_requests=0).extended([3.0, 1.0, 2.0]).extended([0.5]),
    PUBLISHED,
    PublishResult(version=None, gate=GateVerdict(accepted=False, reasons=["ONNX parity 1e-3 > 1e-5"])),
    BatchReport(task="slate", teacher_version="t-1", train_events=10, distill={"alpha": 0.5}, label_hit_rate=1.0,
                debias=DebiasReport(method="platt", ece_before=0.2, ece_after=0.01, negative_keep_rate=0.1),
                valid={"auc": 0.7}, test={"auc": 0.69}, published=PUBLISHED, seconds=1.5),
])
def test_reports_round_trip_as_json(value: object) -> None:
    assert msgspec.json.decode(msgspec.json.encode(value), type=type(value)) == value


def test_a_streamed_versions_window_grows_with_what_it_trained() -> None:
    window = DataWindow(sampled_requests=0).extended([3.0, 1.0, 2.0]).extended([]).extended([0.5])
    assert window == DataWindow(sampled_requests=4, first_served_unix=0.5, last_served_unix=3.0)


def test_a_stream_report_or_a_standby_decodes_as_its_own_variant() -> None:
    state = StreamState(records_consumed=5, examples_trained=3, waiting={"r": b"x"}, feedback={"r": {"1": 1.0}})
    counters = msgspec.structs.asdict(state.counters())
    assert (counters["waiting_requests"], counters["waiting_feedback"]) == (1, 1)
    report = StreamReport(**counters, label_hit_rate=None, freshness_s=Freshness(p50=1.0, p95=2.0, requests=3))
    either = StreamReport | StandbyReport
    assert msgspec.json.decode(msgspec.json.encode(report), type=either) == report
    standby = StandbyReport(holder="worker-2")
    assert msgspec.json.decode(msgspec.json.encode(standby), type=either) == standby
    assert b'"kind":"standby"' in msgspec.json.encode(standby)


def _through_torch(saved: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # no pickled object may be in it


def test_the_stream_checkpoint_loads_with_weights_only_and_refuses_an_unknown_format() -> None:
    state = StreamState(offsets={"server-0": 12, "redis": "1-0"}, waiting={"r1": b"\x81\xa1a\x01"},
                        feedback={"r1": {"7": 1.0}}, examples_trained=4,
                        unpublished=DataWindow(sampled_requests=2, first_served_unix=1.0, last_served_unix=2.0))
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters())
    saved = _through_torch(StreamCheckpoint(state=state, saved_unix=9.0).to_torch(model.state_dict(),
                                                                                    optimizer.state_dict()))
    restored = StreamCheckpoint.from_torch(saved, "stream.pt")
    assert restored.state == state
    assert restored.format == CHECKPOINT_FORMAT
    torch.testing.assert_close(saved["model"]["weight"], model.weight.detach())
    # A checkpoint written before the format (the state as a plain dict) is still read.
    legacy = _through_torch({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "state": msgspec.to_builtins(state, builtin_types=(bytes,)), "saved_unix": 9.0})
    assert StreamCheckpoint.from_torch(legacy, "stream.pt").state == state
    future = saved | {"format": CHECKPOINT_FORMAT + 1}
    with pytest.raises(DataError, match=f"stream.pt: stream checkpoint format {CHECKPOINT_FORMAT + 1}"):
        StreamCheckpoint.from_torch(future, "stream.pt")


@pytest.mark.parametrize("method", ["none", "platt", "isotonic"])
def test_a_calibration_round_trips_without_pickle(method: str) -> None:
    calibration = Calibration(method=method, teacher_version="t", ece_before=0.2, ece_after=0.05, slope=0.5,
                              intercept=-1.0, knots_x=[0.0, 0.5, 1.0], knots_y=[0.1, 0.2, 0.9])
    again = Calibration.from_bytes(calibration.to_bytes(), "c.msgpack")
    assert again == calibration
    p = np.array([0.0, 0.25, 0.5, 0.99])
    np.testing.assert_array_equal(again.transform(p), calibration.transform(p))
    assert all(map(math.isfinite, again.transform(p)))


def test_an_unknown_calibration_format_or_garbage_is_refused_by_name() -> None:
    future = msgspec.msgpack.encode({"format": CALIBRATION_FORMAT + 1, "method": "platt", "teacher_version": "t"})
    with pytest.raises(DataError, match=f"c.msgpack: teacher calibration format {CALIBRATION_FORMAT + 1}"):
        Calibration.from_bytes(future, "c.msgpack")
    with pytest.raises(DataError, match="c.msgpack: teacher calibration is unreadable"):
        Calibration.from_bytes(b"\x80\x04pickle", "c.msgpack")


def test_a_dataset_manifest_round_trips_and_an_unknown_format_is_refused(ml100k: PreparedDataset,
                                                                          tmp_path: Path) -> None:
    manifest = ml100k.manifest
    assert isinstance(manifest, DatasetManifest)
    path = tmp_path / "manifest.json"
    path.write_bytes(manifest.to_json())
    assert DatasetManifest.read(path) == manifest
    path.write_bytes(msgspec.json.encode(msgspec.to_builtins(manifest) | {"format": DATASET_FORMAT + 1}))
    with pytest.raises(DataError, match=f"dataset manifest format {DATASET_FORMAT + 1} is not supported"):
        DatasetManifest.read(path)
    path.write_text("{}")
    with pytest.raises(DataError, match="dataset manifest is unreadable"):
        DatasetManifest.read(path)


def test_a_teacher_manifest_round_trips_and_an_unknown_format_is_refused(tmp_path: Path) -> None:
    manifest = TeacherManifest(
        teacher_version="teacher-slate-abc", task="slate", size="tiny", family="sequence",
        config={"history_limit": 10}, parameters=1_000, schema_hash="f" * 16, dataset="ml-100k",
        data_window=TeacherDataWindow(train_start_ts=1, train_end_ts=2, train_events=3), train={"epochs": 1},
        best_epoch=0, history=[{"loss": 0.5}], valid={"auc": 0.7}, test={"auc": 0.69}, seconds=1.0)
    path = tmp_path / "manifest.json"
    path.write_bytes(manifest.to_json())
    assert TeacherManifest.read(path) == manifest
    assert manifest.history_limit == 10
    path.write_bytes(msgspec.json.encode(msgspec.to_builtins(manifest) | {"format": TEACHER_MANIFEST_FORMAT + 1}))
    with pytest.raises(DataError, match=f"teacher manifest format {TEACHER_MANIFEST_FORMAT + 1} is not supported"):
        TeacherManifest.read(path)


def test_operator_responses_round_trip_and_are_documented() -> None:
    manifest = Manifest(version="v1", schema_hash="f" * 16, sha256="0" * 64, created_unix=1.0,
                        data_window=DataWindow(sampled_requests=3, first_served_unix=1.0, last_served_unix=2.0))
    listing = VersionList(
        active="v1", holdback=Holdback(version="v0", share=0.1),
        versions=[VersionEntry(version="v1", active=True, holdback=False, staged=True, manifest=manifest)],
        replicas=[ReplicaEntry(replica="a:1", active="v1", http="h:1", grpc="h:2", updated_unix=1.0, stale=True)])
    for value in (listing, VersionChange(version="v1", manifest=manifest, active=True), VersionDeleted(deleted="v0"),
                  HoldbackState(holdback=None)):
        assert msgspec.json.decode(msgspec.json.encode(value), type=type(value)) == value
    assert set(operator_schemas()) >= {"VersionList", "VersionChange", "VersionDeleted", "HoldbackState", "Manifest"}


def test_the_deploy_check_report_round_trips_and_an_unknown_format_is_refused(tmp_path: Path) -> None:
    traffic = Traffic(http=10, grpc=9, grpc_errors=1, versions_seen={"v1": 12, "v2": 6})
    report = DeployCheckReport(
        passed=False, failures=["1 of 9 gRPC requests failed"], engine="podman 4.3.1", traffic=traffic,
        images=[ImageBuild(name="recdistill-student:latest", dockerfile="deploy/docker/student-server.Dockerfile",
                           build_seconds=12.5, size_mb=2170.0, health_check="student-1: healthy")],
        first_version="v1", promoted_versions=["v2"], swap_seconds=41.0, replicas_serving={"student-1": "v2"},
        kills=[Kill(service="student-1", container="recdistill_student-1_1", requests_after=300, errors_after=1,
                    recovered_seconds=0.0, recovered="answered by the other", restarted_seconds=4.2)],
        examples_trained=900, stage_seconds={"images": 30.0}, total_seconds=600.0)
    path = tmp_path / "report.json"
    path.write_bytes(report.to_json())
    again = DeployCheckReport.read(path)
    assert again == report
    assert (again.traffic.requests, again.traffic.failed) == (19, 1)
    path.write_bytes(report.to_json().replace(b'"format": 1', b'"format": 9'))
    with pytest.raises(DataError, match="format 9 is not supported"):
        DeployCheckReport.read(path)


def test_the_demo_report_round_trips_and_an_unknown_format_is_refused(ml100k: PreparedDataset,
                                                                      tmp_path: Path) -> None:
    manifest = ml100k.manifest
    metrics = {"auc": 0.6, "gauc": 0.6, "log_loss": 0.2, "ece": 0.01, "auc_std": None, "gauc_std": None,
               "log_loss_std": None, "ece_std": None, "seeds": [0]}
    student = StudentFigures(**metrics, per_seed=[SeedRun(seed=0, best_epoch=2, seconds=1.0, valid={"auc": 0.61},
                                                          test={"auc": 0.6})])
    teacher = TeacherFigures(auc=0.7, gauc=0.7, log_loss=0.2, ece=0.01, events=100.0, auc_std=None, version="t1",
                             parameters=10, history_events="all", reused=False, selection_on_valid=[],
                             train_seconds=1.0, per_seed=[TeacherSeed(version="t1", test_auc=0.7)])
    stream_row = VariantFigures(**metrics, ndcg_at_10=0.3, name="batch_only", description="d", phase="stream")
    gains = {"teacher_gain_auc": 0.1, "teacher_gain_auc_ci95": Interval(low=0.05, high=0.15), "gain_auc": 0.05,
             "gain_auc_ci95": None, "attributable_gain_auc": 0.01, "attributable_gain_auc_ci95": None,
             "ratio_defined": True, "transferability": 0.5, "transferability_ci95": Interval(low=0.1, high=0.9),
             "transferability_attributable": None, "transferability_attributable_ci95": None, "best_control": None,
             "undefined_draws": 0, "bootstrap_resamples": 2000}
    # A ctr task: no references, no stream (UNSET: absent from the JSON, not null).
    task = TaskFigures(
        teacher=teacher, student_parameters=10, student_baseline=student, student_distilled=student, **gains,
        transferability_std=None, transferability_per_seed=[0.5],
        by_history_length=[BucketFigures(history_events="0-9", events=0, users=0)], history_value=None,
        transferability_note="n", teacher_calibration=None, test_events=100, test_users=10, teacher_seeds=1,
        tuning={"baseline": TuningFigures(chosen={"weight_decay": 0.0}, tried=[{"weight_decay": 0.0,
                                                                               "valid_auc": 0.6}], cached=False)},
        protocol="p", ablations=[stream_row], controls=[], channels=[], student_window_events="all")
    report = DemoReport(
        dataset=DemoDataset(name=manifest.dataset, stats=manifest.stats, split=manifest.split.counts),
        headline_task="slate", teacher=teacher, student_baseline=student, student_distilled=student,
        transferability=0.5, transferability_std=0.1, transferability_ci95=Interval(low=0.1, high=0.9),
        transferability_attributable=None, transferability_attributable_ci95=None, best_control=None,
        ablations=[stream_row], controls=[], serving=None, tasks={"ctr": task}, config={},
        stage_seconds={"data": 1.0}, total_seconds=2.0, artifacts={})
    path = tmp_path / "report.json"
    path.write_bytes(report.to_json())
    assert DemoReport.read(path) == report
    # A row carries only the keys its variant has: a stream row no transferability, a batch row no phase.
    row = msgspec.json.decode(path.read_bytes())["ablations"][0]
    assert (row["phase"], row["ndcg@10"]) == ("stream", 0.3)
    assert "transferability" not in row
    assert "channel" not in row
    summary = msgspec.json.decode(path.read_bytes())["tasks"]["ctr"]
    assert "references" not in summary
    assert "stream" not in summary
    assert summary["by_history_length"] == [{"history_events": "0-9", "events": 0, "users": 0}]
    with pytest.raises(msgspec.ValidationError, match="unknown field `surprise`"):
        msgspec.convert(msgspec.to_builtins(teacher) | {"surprise": 1}, TeacherFigures)
    with pytest.raises(msgspec.ValidationError, match=r"unknown field `surprise` - at `\$\[...\]`"):
        msgspec.convert({"ctr": msgspec.to_builtins(task) | {"surprise": 1}}, dict[str, TaskFigures])
    path.write_bytes(msgspec.json.encode(msgspec.to_builtins(report) | {"format": DEMO_REPORT_FORMAT + 1}))
    with pytest.raises(DataError, match=f"demo report format {DEMO_REPORT_FORMAT + 1} is not supported"):
        DemoReport.read(path)
