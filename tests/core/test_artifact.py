"""The registry's files are versioned typed structs: read back as written, an unknown format refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recdistill.core.artifact import (
    ArtifactError,
    VersionNotFoundError,
    publish_version,
    read_manifest,
    read_state,
    recorded_anchor,
    write_state,
)
from recdistill.core.contracts.registry import RegistryState
from recdistill.core.contracts.worker import GateMetrics

pytestmark = pytest.mark.unit


def test_manifest_and_state_round_trip_and_unknown_formats_are_refused(tmp_path: Path) -> None:
    publish_version(tmp_path, "v1", b"onnx bytes", "abc123", teacher_version="t1",
                    metrics=GateMetrics(holdout={"auc": 0.7}))
    manifest = read_manifest(tmp_path, "v1")
    assert (manifest.version, manifest.schema_hash, manifest.teacher_version) == ("v1", "abc123", "t1")
    assert manifest.metrics == GateMetrics(holdout={"auc": 0.7})
    state = RegistryState().activated("v1").activated("v2")
    write_state(tmp_path, state)
    assert read_state(tmp_path) == RegistryState(active="v2", history=["v1"])
    assert read_state(tmp_path).rolled_back() == RegistryState(active="v1", history=[])

    path = tmp_path / "v1" / "manifest.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"format": 2}))
    with pytest.raises(ArtifactError, match="format 2 is not supported"):
        read_manifest(tmp_path, "v1")
    (tmp_path / "state.json").write_text(json.dumps({"format": 7, "active": "v1"}))
    with pytest.raises(ArtifactError, match="format 7 is not supported"):
        read_state(tmp_path)
    with pytest.raises(VersionNotFoundError):
        read_manifest(tmp_path, "v9")


def test_a_manifest_written_before_anchored_was_recorded_still_names_the_anchor(tmp_path: Path) -> None:
    """The gate's metrics are a typed struct now; a manifest from before (`reanchor` only) reads into it."""
    decision = {"difference": 0.01, "ci90": [0.001, 0.02], "se": 0.005, "margin": 0.01, "margin_configured": 0.005,
                "power_at_margin": 0.9, "non_inferior": True, "better": True, "samples": 200, "resamples": "users",
                "version": "v0"}
    for version, created, reanchor in (("v1", 1.0, True), ("v2", 2.0, False)):
        publish_version(tmp_path, version, b"onnx", "abc", created_unix=created)
        path = tmp_path / version / "manifest.json"
        old = json.loads(path.read_text()) | {"metrics": {"parity_max_abs_diff": 1e-7, "holdout": {"auc": 0.71},
                                                          "quality": {"anchor": decision}, "reanchor": reanchor,
                                                          "latency_p99_ms": 0.5}}
        path.write_text(json.dumps(old))
    metrics = read_manifest(tmp_path, "v1").metrics
    assert metrics.quality["anchor"].ci90 == (0.001, 0.02)
    assert (metrics.anchored, metrics.made_anchor) == (None, True)
    anchor = recorded_anchor(tmp_path)
    assert anchor is not None
    assert (anchor.version, anchor.holdout_auc) == ("v1", 0.71)
    bad = json.loads((tmp_path / "v2" / "manifest.json").read_text())
    bad["metrics"]["quality"] = {"champion": decision}  # not a gate role: refused by name, not read as a dict
    (tmp_path / "v2" / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(ArtifactError, match="champion"):
        read_manifest(tmp_path, "v2")
