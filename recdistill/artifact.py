"""Model versions in a registry directory: the format the worker writes and the server reads.

registry/
  features.json          the feature schema the server encodes with
  state.json             {"active": version | null, "history": [previously active versions, oldest first]}
  <version>/model.onnx   the serving graph (inputs: the encoder's tensors; output: probability [B, C])
  <version>/manifest.json  version, schema_hash, sha256 of model.onnx, teacher_version, data window, metrics, ...
Versions are written to a temporary directory and renamed into place: never half-visible.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from recdistill.errors import RecDistillError
from recdistill.features.schema import FeatureSchema

VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ArtifactError(RecDistillError):
    """A model version is missing, malformed, corrupt or built for another schema."""


def check_version_name(version: str) -> str:
    if not VERSION_PATTERN.fullmatch(version) or ".." in version:
        raise ArtifactError(f"invalid version name {version!r}: letters, digits, '.', '_', '-' (max 64)")
    return version


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        json.dump(data, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def ensure_registry(registry: Path, schema: FeatureSchema) -> None:
    """Create the registry with its feature schema, or check that it holds the same one."""
    registry.mkdir(parents=True, exist_ok=True)
    path = registry / "features.json"
    if path.exists():
        FeatureSchema.load(path).require_hash(schema.hash, f"registry {registry}")
    else:
        schema.save(path)


def publish_version(registry: Path, version: str, onnx_model: bytes, manifest: dict[str, Any]) -> Path:
    """Write a new version directory atomically; the manifest gets version, sha256 and creation time."""
    check_version_name(version)
    registry.mkdir(parents=True, exist_ok=True)
    target = registry / version
    if target.exists():
        raise ArtifactError(f"version {version} already exists in {registry}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=registry))
    try:
        (tmp / "model.onnx").write_bytes(onnx_model)
        full = manifest | {"version": version, "sha256": sha256_bytes(onnx_model),
                           "created_unix": manifest.get("created_unix", int(time.time()))}
        write_json_atomic(tmp / "manifest.json", full)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_manifest(registry: Path, version: str) -> dict[str, Any]:
    path = registry / check_version_name(version) / "manifest.json"
    if not path.is_file():
        raise ArtifactError(f"version {version} not found in the registry")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"version {version}: unreadable manifest ({exc})") from None
    for key in ("version", "schema_hash", "sha256"):
        if key not in manifest:
            raise ArtifactError(f"version {version}: manifest lacks '{key}'")
    return manifest


def read_state(registry: Path) -> dict[str, Any]:
    path = registry / "state.json"
    if not path.exists():
        return {"active": None, "history": []}
    return json.loads(path.read_text())


def write_state(registry: Path, state: dict[str, Any]) -> None:
    write_json_atomic(registry / "state.json", state)
