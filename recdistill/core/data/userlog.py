"""A user's own interaction log from CSV or Parquet.

Schema (one row per impression):
- required: `user_id`, `item_id` (strings or integers), `timestamp` (unix seconds), `label` (0/1)
- optional: `rating` (number); user features `age`, `gender`, `occupation`, `zip_code`;
  item features `genres` (a list, or a `|`-separated string in CSV) and `release_year`.
User and item features are taken from the first row of each user / item.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recdistill.core.data.log import USER_FEATURE_COLUMNS, InteractionLog, normalise_items, normalise_users
from recdistill.core.data.movielens import sha256_file
from recdistill.core.errors import DataError

REQUIRED_COLUMNS = ("user_id", "item_id", "timestamp", "label")


def _read(kind: str, path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{kind} file not found: {path}")
    if kind == "csv":
        return pd.read_csv(path, dtype={"user_id": str, "item_id": str})
    return pd.read_parquet(path)


def load_user_log(kind: str, path: Path) -> InteractionLog:
    frame = _read(kind, path)
    missing = [column for column in REQUIRED_COLUMNS if column not in frame]
    if missing:
        raise DataError(f"{path}: missing required column(s) {missing}; required: {list(REQUIRED_COLUMNS)}")
    labels = pd.to_numeric(frame["label"], errors="coerce")
    if labels.isna().any() or not labels.isin([0, 1]).all():
        raise DataError(f"{path}: column 'label' must hold only 0 or 1")
    timestamps = pd.to_numeric(frame["timestamp"], errors="coerce")
    if timestamps.isna().any():
        raise DataError(f"{path}: column 'timestamp' must be unix seconds with no missing values")
    events = pd.DataFrame({
        "user_id": frame["user_id"].astype(str),
        "item_id": frame["item_id"].astype(str),
        "timestamp": timestamps.astype(np.int64),
        "rating": pd.to_numeric(frame["rating"], errors="coerce") if "rating" in frame else np.nan,
        "label": labels.astype(np.int8),
    })
    user_columns = [c for c in USER_FEATURE_COLUMNS if c in frame]
    users = frame[["user_id", *user_columns]].drop_duplicates("user_id")
    item_frame = frame.drop_duplicates("item_id")
    items = pd.DataFrame({"item_id": item_frame["item_id"].astype(str)})
    if "genres" in item_frame:
        items["genres"] = [
            list(g) if isinstance(g, list | np.ndarray) else ([] if pd.isna(g) else str(g).split("|"))
            for g in item_frame["genres"]
        ]
    if "release_year" in item_frame:
        items["release_year"] = item_frame["release_year"].to_numpy()
    log = InteractionLog(
        name=path.stem,
        events=events,
        users=normalise_users(users, events["user_id"]),
        items=normalise_items(items, events["item_id"]),
        source_sha256=sha256_file(path),
    )
    log.validate()
    return log
