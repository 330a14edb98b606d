"""Teacher checkpoints: a directory with weights, config, feature schema and a manifest.

Written to a temporary sibling directory and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from recdistill.core.contracts.teacher import TeacherManifest
from recdistill.core.errors import DataError
from recdistill.core.features.schema import FeatureSchema
from recdistill.core.fileio import publish_directory
from teacher_service.families import FAMILIES


def save_checkpoint(out_dir: Path, model: torch.nn.Module, schema: FeatureSchema, manifest: TeacherManifest) -> None:
    if (out_dir / "manifest.json").exists():
        raise DataError(f"{out_dir} already holds a teacher checkpoint; choose another --out or remove it")
    with publish_directory(out_dir) as tmp:
        torch.save(model.state_dict(), tmp / "model.pt")
        schema.save(tmp / "features.json")
        (tmp / "manifest.json").write_bytes(manifest.to_json())


def read_manifest(directory: Path) -> TeacherManifest:
    """A checkpoint's manifest, its schema checked against the hash it names (no weights read)."""
    manifest_path = directory / "manifest.json"
    if not manifest_path.exists():
        raise DataError(f"{directory} is not a teacher checkpoint (no manifest.json)")
    manifest = TeacherManifest.read(manifest_path)
    FeatureSchema.load(directory / "features.json").require_hash(manifest.schema_hash,
                                                                  f"teacher {manifest.teacher_version}")
    return manifest


def load_checkpoint(directory: Path) -> tuple[torch.nn.Module, FeatureSchema, TeacherManifest]:
    """The teacher of either family (`family` in the manifest; checkpoints before it are target attention)."""
    manifest = read_manifest(directory)
    schema = FeatureSchema.load(directory / "features.json")
    model = FAMILIES[manifest.family].build(schema, manifest.config)
    model.load_state_dict(torch.load(directory / "model.pt", map_location="cpu", weights_only=True))
    model.eval()
    return model, schema, manifest
