"""Train the teacher of a task, or reuse the one already trained on the same data with the same config; and
choose among candidate teachers (sizes, history limits) on the valid window."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import msgspec

from recdistill.core.contracts.teacher import TeacherManifest
from recdistill.core.data.dataset import PreparedDataset
from teacher_service import TeacherTrainConfig, architecture, family_of, train_teacher

SEQUENCE_ONLY = ("windows_per_batch", "stack_on_valid")  # training settings only the sequence family reads

logger = logging.getLogger(__name__)


def content_key(dataset: PreparedDataset, config: TeacherTrainConfig) -> str:
    """Everything the teacher's weights depend on: the source data, the schema, the split, the training
    config and the architecture its size names (its dimensions, not the name: a size redefined is a new key)."""
    manifest = dataset.manifest
    payload = {"source": manifest.source_sha256, "schema": dataset.schema.hash,
               "split": msgspec.to_builtins(manifest.split), "slate_negatives": manifest.slate_negatives,
               "seed": manifest.seed,
               "train": {k: v for k, v in asdict(config).items()  # what the family reads
                         if family_of(config.size).name == "sequence" or k not in SEQUENCE_ONLY},
               "architecture": architecture(config.size).to_dict()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def train_or_reuse(dataset: PreparedDataset, config: TeacherTrainConfig, cache: Path, dest: Path | None
                   ) -> tuple[TeacherManifest, bool]:
    """The teacher checkpoint in the cache (trained if it is not there), copied to `dest` unless None;
    returns (its manifest, reused?)."""
    cached = cache / f"teacher-{config.task}-{content_key(dataset, config)}"
    reused = (cached / "manifest.json").exists()
    if reused:
        logger.info("reusing teacher %s (same data and config)", cached.name)
    else:
        train_teacher(dataset.directory, cached, config)
    if dest is not None:
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(cached, dest)
    return TeacherManifest.read(cached / "manifest.json"), reused


def choose_teacher(dataset: PreparedDataset, config: TeacherTrainConfig, sizes: tuple[str, ...],
                   history_limits: tuple[int | None, ...], cache: Path, dest: Path
                   ) -> tuple[TeacherManifest, bool, list[dict[str, Any]]]:
    """Every (size, history limit) candidate trained (or reused), the one with the best valid AUC (early
    stopping and this choice read the valid window before the gate's holdout; test is never read) copied
    to `dest`: (its manifest, reused?, the table of candidates)."""
    tried = []
    for size in sizes:
        for limit in history_limits:
            candidate = replace(config, size=size, history_limit=limit)
            manifest, reused = train_or_reuse(dataset, candidate, cache, None)
            tried.append({"size": size, "history_limit": limit, "parameters": manifest.parameters,
                          "valid_auc": round(manifest.valid["auc"], 6), "config": candidate, "reused": reused})
    best = max(tried, key=lambda row: row["valid_auc"])
    manifest, _ = train_or_reuse(dataset, best["config"], cache, dest)
    return manifest, best["reused"], [{k: v for k, v in row.items() if k != "config"} | {"chosen": row is best}
                              for row in tried]
