"""Teacher checkpoints: a directory with weights, config, feature schema and a manifest.

Written to a temporary sibling directory and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from recdistill.core.errors import DataError
from recdistill.core.features.schema import FeatureSchema
from teacher_service.model import TeacherConfig, TeacherModel
from teacher_service.sequence import SequenceConfig, SequenceTeacher


def save_checkpoint(out_dir: Path, model: torch.nn.Module, schema: FeatureSchema, manifest: dict[str, Any]) -> None:
    if (out_dir / "manifest.json").exists():
        raise DataError(f"{out_dir} already holds a teacher checkpoint; choose another --out or remove it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        torch.save(model.state_dict(), tmp / "model.pt")
        schema.save(tmp / "features.json")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if out_dir.exists():
            out_dir.rmdir()  # an empty leftover only; a non-empty one raises
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(directory: Path) -> dict[str, Any]:
    """A checkpoint's manifest, its schema checked against the hash it names (no weights read)."""
    manifest_path = directory / "manifest.json"
    if not manifest_path.exists():
        raise DataError(f"{directory} is not a teacher checkpoint (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    FeatureSchema.load(directory / "features.json").require_hash(manifest["schema_hash"],
                                                                  f"teacher {manifest['teacher_version']}")
    return manifest


def load_checkpoint(directory: Path) -> tuple[torch.nn.Module, FeatureSchema, dict[str, Any]]:
    """The teacher of either family (`family` in the manifest; checkpoints before it are target attention)."""
    manifest = read_manifest(directory)
    schema = FeatureSchema.load(directory / "features.json")
    model: torch.nn.Module
    if manifest.get("family", "attention") == "sequence":
        model = SequenceTeacher(schema, SequenceConfig.from_dict(manifest["config"]))
    else:
        model = TeacherModel(schema, TeacherConfig.from_dict(manifest["config"]))
    model.load_state_dict(torch.load(directory / "model.pt", map_location="cpu", weights_only=True))
    model.eval()
    return model, schema, manifest
