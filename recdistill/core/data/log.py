"""The normalised interaction log every source is turned into before preparation.

Columns (all ids are strings):
- events: user_id, item_id, timestamp (int64, unix seconds), rating (float64, NaN if absent), label (int8 0/1)
- users:  user_id, age (float64, NaN if absent), gender, occupation, zip_code (str, "" if absent)
- items:  item_id, genres (list[str]), release_year (float64, NaN if absent)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recdistill.core.errors import DataError

USER_FEATURE_COLUMNS = ("age", "gender", "occupation", "zip_code")
ITEM_FEATURE_COLUMNS = ("genres", "release_year")


@dataclass(frozen=True)
class InteractionLog:
    name: str
    events: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    source_sha256: str

    def validate(self) -> None:
        for column in ("user_id", "item_id", "timestamp", "label"):
            if column not in self.events:
                raise DataError(f"interaction log '{self.name}' lacks the column '{column}'")
        if self.events.empty:
            raise DataError(f"interaction log '{self.name}' has no events")
        labels = self.events["label"]
        if not labels.isin([0, 1]).all():
            raise DataError(f"interaction log '{self.name}': 'label' must be 0 or 1")
        if self.events["timestamp"].isna().any():
            raise DataError(f"interaction log '{self.name}': 'timestamp' has missing values")


def normalise_users(users: pd.DataFrame, user_ids: pd.Series) -> pd.DataFrame:
    """One row per user seen in the events, with every user feature column present."""
    out = pd.DataFrame({"user_id": pd.unique(user_ids.astype(str))})
    if not users.empty:
        users = users.assign(user_id=users["user_id"].astype(str)).drop_duplicates("user_id")
        out = out.merge(users, on="user_id", how="left")
    out["age"] = pd.to_numeric(out["age"], errors="coerce") if "age" in out else np.nan
    for column in ("gender", "occupation", "zip_code"):
        out[column] = out[column].fillna("").astype(str) if column in out else ""
    return out[["user_id", *USER_FEATURE_COLUMNS]]


def normalise_items(items: pd.DataFrame, item_ids: pd.Series) -> pd.DataFrame:
    """One row per item seen in the events, with every item feature column present."""
    out = pd.DataFrame({"item_id": pd.unique(item_ids.astype(str))})
    if not items.empty:
        items = items.assign(item_id=items["item_id"].astype(str)).drop_duplicates("item_id")
        out = out.merge(items, on="item_id", how="outer")
    if "genres" in out:
        out["genres"] = [g if isinstance(g, list) else [] for g in out["genres"]]
    else:
        out["genres"] = [[] for _ in range(len(out))]
    if "release_year" in out:
        out["release_year"] = pd.to_numeric(out["release_year"], errors="coerce")
    else:
        out["release_year"] = np.nan
    return out[["item_id", *ITEM_FEATURE_COLUMNS]]
