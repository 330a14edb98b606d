"""Turn an interaction log into a prepared dataset: time split, per-user timelines, slates, schema.

Layout of a prepared dataset directory (the manifest is written last and marks it complete):
- events.parquet:    one row per event, sorted by time: event_id, user_id, item_id, timestamp, rating,
                     label (ctr task), split, hist_len, slate_negatives (slate task)
- timelines.parquet: per user, all events oldest first: item_ids, actions, timestamps. The history of
                     an event is `timeline[:hist_len]`: the user's events strictly earlier in time.
- users.parquet, items.parquet: side features; features.json: the feature schema; manifest.json.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recdistill.core.data.log import InteractionLog
from recdistill.core.features.schema import ModelView, build_schema, canonical_action
from recdistill.core.fileio import atomic_write_text, atomic_write_with
from recdistill.core.settings import DataSettings

logger = logging.getLogger(__name__)

DEFAULT_VIEWS = {"teacher": ModelView(history_len=20_000), "student": ModelView(history_len=10)}
SPLITS = ("train", "valid", "test")


def _sort_events(events: pd.DataFrame) -> pd.DataFrame:
    ordered = events.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    return ordered.assign(event_id=np.arange(len(ordered), dtype=np.int64))


def _assign_split(events: pd.DataFrame, fractions: tuple[float, float]) -> tuple[pd.DataFrame, dict[str, int]]:
    valid_start = int(np.quantile(events["timestamp"], fractions[0]))
    test_start = int(np.quantile(events["timestamp"], fractions[1]))
    split = np.where(events["timestamp"] < valid_start, "train",
                     np.where(events["timestamp"] < test_start, "valid", "test"))
    return events.assign(split=split), {"valid_start_ts": valid_start, "test_start_ts": test_start}


def _history_lengths(events: pd.DataFrame) -> np.ndarray:
    """For each event, how many of its user's events lie strictly earlier in time."""
    hist_len = np.zeros(len(events), dtype=np.int64)
    for _, rows in events.groupby("user_id", sort=False).indices.items():
        ts = events["timestamp"].to_numpy()[rows]  # rows are in time order already
        hist_len[rows] = np.searchsorted(ts, ts, side="left")
    return hist_len


def _timelines(events: pd.DataFrame) -> pd.DataFrame:
    actions = events["rating"] if events["rating"].notna().all() else events["label"].astype(float)
    frame = events.assign(action=[canonical_action(float(a)) for a in actions])
    grouped = frame.groupby("user_id", sort=True)
    return pd.DataFrame({
        "user_id": list(grouped.groups),
        "item_ids": grouped["item_id"].agg(list).to_list(),
        "actions": grouped["action"].agg(list).to_list(),
        "timestamps": grouped["timestamp"].agg(list).to_list(),
    })


def _slate_negatives(events: pd.DataFrame, catalogue: np.ndarray, k: int, seed: int) -> list[list[str]]:
    """k never-rated items per event, popularity-weighted by training counts (+1), distinct, seeded."""
    train_counts = events.loc[events["split"] == "train", "item_id"].value_counts()
    weights = train_counts.reindex(catalogue).fillna(0).to_numpy(dtype=np.float64) + 1.0
    cdf = np.cumsum(weights) / weights.sum()
    rng = np.random.default_rng(seed)
    negatives: list[list[str]] = [[] for _ in range(len(events))]
    for _, rows in events.groupby("user_id", sort=True).indices.items():
        rated = set(events["item_id"].to_numpy()[rows])
        if len(catalogue) - len(rated) < k:
            continue
        for row in rows:
            chosen: dict[str, None] = {}
            while len(chosen) < k:
                draws = catalogue[np.minimum(np.searchsorted(cdf, rng.random(4 * k)), len(catalogue) - 1)]
                for item in draws:
                    if item not in rated:
                        chosen[item] = None
            negatives[row] = list(chosen)[:k]
    return negatives


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    atomic_write_with(path, lambda handle: frame.to_parquet(handle, index=False))


def prepare(log: InteractionLog, out_dir: Path, settings: DataSettings | None = None,
            views: dict[str, ModelView] | None = None) -> dict[str, Any]:
    settings = settings or DataSettings()
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    events = _sort_events(log.events)
    events, boundaries = _assign_split(events, settings.split_fractions)
    events["hist_len"] = _history_lengths(events)
    catalogue = np.array(sorted(set(log.items["item_id"]) | set(events["item_id"])), dtype=object)
    events["slate_negatives"] = _slate_negatives(events, catalogue, settings.slate_negatives, settings.seed)
    schema = build_schema(events[events["split"] == "train"], log.users, log.items, views or DEFAULT_VIEWS)

    _write_parquet(events, out_dir / "events.parquet")
    _write_parquet(_timelines(events), out_dir / "timelines.parquet")
    _write_parquet(log.users, out_dir / "users.parquet")
    _write_parquet(log.items, out_dir / "items.parquet")
    schema.save(out_dir / "features.json")

    hist = events["hist_len"].to_numpy()
    manifest: dict[str, Any] = {
        "dataset": log.name,
        "source_sha256": log.source_sha256,
        "created_unix": int(time.time()),
        "schema_hash": schema.hash,
        "stats": {
            "users": int(events["user_id"].nunique()),
            "items": int(events["item_id"].nunique()),
            "catalogue_items": len(catalogue),
            "interactions": len(events),
            "positive_rate": round(float(events["label"].mean()), 4),
            "history_length_percentiles": {
                f"p{q}": int(np.percentile(hist, q)) for q in (50, 90, 99)
            } | {"max": int(hist.max())},
        },
        "split": boundaries | {
            "fractions": list(settings.split_fractions),
            "counts": {name: int((events["split"] == name).sum()) for name in SPLITS},
            "rule": "train: ts < valid_start_ts; valid: ts < test_start_ts; test: the rest",
        },
        "tasks": {
            "ctr": "each event is an impression; label = rating >= 4 (or the log's label)",
            "slate": f"each event: the item rated plus {settings.slate_negatives} never-rated items sampled by "
                     f"training popularity (seed {settings.seed}); label 1 for the real item",
        },
        "seed": settings.seed,
        "slate_negatives": settings.slate_negatives,
        "files": ["events.parquet", "timelines.parquet", "users.parquet", "items.parquet", "features.json"],
        "seconds": round(time.perf_counter() - started, 2),
    }
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2))
    logger.info("prepared %s into %s in %.1fs", log.name, out_dir, manifest["seconds"])
    return manifest
