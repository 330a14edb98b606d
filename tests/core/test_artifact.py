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
    write_state,
)
from recdistill.core.contracts.registry import RegistryState

pytestmark = pytest.mark.unit


def test_manifest_and_state_round_trip_and_unknown_formats_are_refused(tmp_path: Path) -> None:
    publish_version(tmp_path, "v1", b"onnx bytes", "abc123", teacher_version="t1", metrics={"auc": 0.7})
    manifest = read_manifest(tmp_path, "v1")
    assert (manifest.version, manifest.schema_hash, manifest.teacher_version) == ("v1", "abc123", "t1")
    assert manifest.metrics == {"auc": 0.7}
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
