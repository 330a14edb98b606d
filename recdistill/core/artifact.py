"""Model versions in a registry directory: the format the worker writes and the server reads.

registry/
  features.json            the feature schema the server encodes with
  state.json               `RegistryState`: the active version and the versions it replaced
  gate-anchor.json         `GateAnchor`: the version the promotion gate holds every candidate to
  <version>/model.onnx     the serving graph (inputs: the encoder's tensors; output: probability [B, C])
  <version>/manifest.json  `Manifest`: version, schema hash, sha256 of model.onnx, teacher, metrics, ...
  scenarios/<name>/        every scenario after the schema's first: its own versions, state.json, gate-anchor.json
                           (the first scenario's live at the top; `places.ScenarioPlace` says where each lives)
Versions are written to a temporary directory and renamed into place: never half-visible.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from recdistill.core.contracts.registry import (
    ANCHOR_FORMAT,
    MANIFEST_FORMAT,
    STATE_FORMAT,
    GateAnchor,
    Manifest,
    RegistryState,
    to_json,
)
from recdistill.core.errors import NotFoundError, RecDistillError, SchemaMismatchError
from recdistill.core.features.schema import FeatureSchema
from recdistill.core.fileio import atomic_write_bytes, publish_directory
from recdistill.core.places import SCENARIOS_DIR

# Letters, digits, "_", "-" and single dots (never "..", so never a path out of the registry); at most 64.
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*\.?$")
VERSION_MAX_LENGTH = 64


class ArtifactError(RecDistillError):
    """A model version or the registry's state is malformed, corrupt or built for another schema."""


class VersionNotFoundError(ArtifactError, NotFoundError):
    """The registry has no such version."""


def check_version_name(version: str) -> str:
    if len(version) > VERSION_MAX_LENGTH or not VERSION_PATTERN.fullmatch(version):
        raise ArtifactError(f"invalid version name {version!r}: letters, digits, '.', '_', '-' (max 64)")
    if version == SCENARIOS_DIR:
        raise ArtifactError(f"invalid version name {version!r}: the registry keeps its other scenarios there")
    return version


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ensure_registry(registry: Path, schema: FeatureSchema) -> None:
    """Create the registry with its feature schema, or check that it holds the same one."""
    registry.mkdir(parents=True, exist_ok=True)
    path = registry / "features.json"
    if path.exists():
        held = FeatureSchema.load(path)
        if held.hash != schema.hash:
            raise SchemaMismatchError(f"registry {registry} serves feature schema {held.hash} ({held.name}); this "
                                      f"model was built on {schema.hash} ({schema.name})")
    else:
        schema.save(path)


def publish_version(registry: Path, version: str, onnx_model: bytes, schema_hash: str, **fields: Any) -> Path:
    """Write a new version directory atomically; the manifest gets version, sha256 and creation time."""
    check_version_name(version)
    registry.mkdir(parents=True, exist_ok=True)
    target = registry / version
    if target.exists():
        raise ArtifactError(f"version {version} already exists in {registry}")
    manifest = Manifest(version=version, schema_hash=schema_hash, sha256=sha256_bytes(onnx_model),
                        created_unix=fields.pop("created_unix", time.time()), **fields)
    with publish_directory(target) as tmp:
        (tmp / "model.onnx").write_bytes(onnx_model)
        (tmp / "manifest.json").write_bytes(to_json(manifest))
    return target


T = TypeVar("T", Manifest, RegistryState, GateAnchor)


def _read_versioned(path: Path, kind: type[T], known_format: int, what: str) -> T:
    """Decode a versioned registry file; a format this reader does not know is refused by name."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{what}: unreadable ({exc})") from None
    return decode_versioned(data, kind, known_format, what)


def decode_versioned(data: bytes, kind: type[T], known_format: int, what: str) -> T:
    try:
        found = msgspec.json.decode(data, type=dict).get("format", known_format)
        if found != known_format:
            raise ArtifactError(f"{what}: format {found} is not supported (this reader knows {known_format})")
        return msgspec.json.decode(data, type=kind)
    except msgspec.DecodeError as exc:
        raise ArtifactError(f"{what}: unreadable ({exc})") from None


def read_manifest(registry: Path, version: str) -> Manifest:
    path = registry / check_version_name(version) / "manifest.json"
    if not path.is_file():
        raise VersionNotFoundError(f"version {version} not found in the registry")
    return _read_versioned(path, Manifest, MANIFEST_FORMAT, f"version {version}: manifest")


def read_state(registry: Path) -> RegistryState:
    path = registry / "state.json"
    if not path.exists():
        return RegistryState()
    return _read_versioned(path, RegistryState, STATE_FORMAT, f"{path}: registry state")


def write_state(registry: Path, state: RegistryState) -> None:
    atomic_write_bytes(registry / "state.json", to_json(state))


def read_anchor(registry: Path) -> GateAnchor | None:
    path = registry / "gate-anchor.json"
    return _read_versioned(path, GateAnchor, ANCHOR_FORMAT, f"{path}: gate anchor") if path.exists() else None


def write_anchor(registry: Path, anchor: GateAnchor) -> None:
    atomic_write_bytes(registry / "gate-anchor.json", to_json(anchor))


def recorded_anchor(registry: Path) -> GateAnchor | None:
    """The anchor as the registry's manifests record it (for a lost `gate-anchor.json`): the newest version
    whose gate made it the anchor (`metrics.anchored`; `metrics.reanchor` in manifests written before it). None
    when no manifest records one (the registry never had a gated version)."""
    manifests = []
    for path in registry.iterdir() if registry.is_dir() else ():
        if path.is_dir() and not path.name.startswith(".") and (path / "manifest.json").is_file():
            try:
                manifests.append(read_manifest(registry, path.name))
            except ArtifactError:
                continue
    anchored = [m for m in manifests if m.metrics.made_anchor]
    if not anchored:
        return None
    newest = max(anchored, key=lambda m: m.created_unix)
    return GateAnchor(version=newest.version, holdout_auc=newest.metrics.holdout_auc,
                      reason=f"rebuilt from the manifest of {newest.version}: gate-anchor.json was missing",
                      anchored_unix=newest.created_unix)
