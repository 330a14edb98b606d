"""Declarative feature schema: which features exist, their vocabularies (built from train only),
normalisation statistics, item side-features and the history window of each model view.

Index convention for every categorical: 0 = missing / padding, 1 = out-of-vocabulary, 2.. = known.
The schema is saved as JSON next to the data and every model; its `hash` pins models to it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recdistill.core.errors import DataError, SchemaMismatchError
from recdistill.core.fileio import atomic_write_text

MISSING_INDEX = 0
OOV_INDEX = 1
FIRST_KNOWN_INDEX = 2
SCHEMA_FORMAT = 1

# User categoricals, in the column order of the `user_cat` tensor.
USER_CATEGORICALS = ("user_id", "age_bucket", "gender", "occupation", "zip_prefix")
AGE_BUCKET_EDGES = (18, 25, 35, 45, 50, 56)


def age_bucket(age: float | None) -> str:
    if age is None or (isinstance(age, float) and math.isnan(age)):
        return ""
    return str(sum(age >= edge for edge in AGE_BUCKET_EDGES))


def zip_prefix(zip_code: str | None) -> str:
    return (zip_code or "")[:2]


def canonical_action(action: object) -> str:
    """Actions (ratings, event types) are compared as strings; 4, 4.0 and "4" are the same action."""
    if action is None:
        return ""
    if isinstance(action, float) and action.is_integer():
        return str(int(action))
    return str(action)


@dataclass(frozen=True)
class ModelView:
    """What one model family reads: the most recent `history_len` events of the history."""

    history_len: int


@dataclass
class FeatureSchema:
    user_vocabs: dict[str, list[str]]
    item_vocab: list[str]
    action_vocab: list[str]
    genre_vocab: list[str]
    # Side features of every item in the catalogue (metadata, known also for items unseen in train).
    item_table: dict[str, tuple[list[str], float | None]]
    release_year_mean: float
    release_year_std: float
    views: dict[str, ModelView]
    max_history_events: int = 20_000
    max_candidates: int = 1_000
    format: int = SCHEMA_FORMAT
    _hash: str | None = field(default=None, repr=False, compare=False)

    @property
    def hash(self) -> str:
        if self._hash is None:
            self._hash = hashlib.sha256(self._canonical_json().encode()).hexdigest()[:16]
        return self._hash

    def view(self, name: str) -> ModelView:
        if name not in self.views:
            raise DataError(f"unknown model view '{name}'; the schema has {sorted(self.views)}")
        return self.views[name]

    def vocab_size(self, feature: str) -> int:
        """Number of embedding rows the feature needs (known values plus missing and OOV)."""
        if feature == "item_id":
            return len(self.item_vocab) + FIRST_KNOWN_INDEX
        if feature == "action":
            return len(self.action_vocab) + FIRST_KNOWN_INDEX
        return len(self.user_vocabs[feature]) + FIRST_KNOWN_INDEX

    @property
    def num_genres(self) -> int:
        return len(self.genre_vocab)

    def _to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_hash")
        data["views"] = {name: asdict(view) for name, view in sorted(self.views.items())}
        data["item_table"] = {k: [list(g), y] for k, (g, y) in sorted(self.item_table.items())}
        return data

    def _canonical_json(self) -> str:
        return json.dumps(self._to_dict(), sort_keys=True, separators=(",", ":"))

    def save(self, path: Path) -> None:
        data = self._to_dict() | {"hash": self.hash}
        atomic_write_text(path, json.dumps(data))

    @classmethod
    def load(cls, path: Path) -> FeatureSchema:
        if not path.exists():
            raise DataError(f"feature schema not found: {path}")
        data = json.loads(path.read_text())
        if data.get("format") != SCHEMA_FORMAT:
            raise DataError(f"{path}: schema format {data.get('format')} is not {SCHEMA_FORMAT}")
        stored_hash = data.pop("hash", None)
        data["views"] = {name: ModelView(**view) for name, view in data["views"].items()}
        data["item_table"] = {k: (list(g), y) for k, (g, y) in data["item_table"].items()}
        schema = cls(**data)
        if stored_hash is not None and stored_hash != schema.hash:
            raise DataError(f"{path}: content does not match its recorded hash (edited or corrupt)")
        return schema

    def require_hash(self, expected: str, what: str) -> None:
        if expected != self.hash:
            raise SchemaMismatchError(f"{what} was built for feature schema {expected}, serving uses {self.hash}")


def build_schema(
    train_events: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    views: dict[str, ModelView],
) -> FeatureSchema:
    """Vocabularies and statistics from the training window only; item metadata from the catalogue."""
    train_users = users[users["user_id"].isin(train_events["user_id"].unique())]
    user_columns = {
        "user_id": train_users["user_id"],
        "age_bucket": train_users["age"].map(age_bucket),
        "gender": train_users["gender"],
        "occupation": train_users["occupation"],
        "zip_prefix": train_users["zip_code"].map(zip_prefix),
    }
    user_vocabs = {name: sorted({v for v in values.astype(str) if v}) for name, values in user_columns.items()}
    item_vocab = sorted(train_events["item_id"].astype(str).unique())
    if "rating" in train_events and train_events["rating"].notna().all():
        actions = train_events["rating"]
    else:
        actions = train_events["label"]
    action_vocab = sorted({canonical_action(float(a)) for a in actions.unique()})
    train_items = items[items["item_id"].isin(item_vocab)]
    genre_vocab = sorted({g for genres in train_items["genres"] for g in genres})
    years = train_items["release_year"].dropna().to_numpy(dtype=np.float64)
    item_table = {
        str(row.item_id): (list(row.genres), None if pd.isna(row.release_year) else float(row.release_year))
        for row in items.itertuples(index=False)
    }
    return FeatureSchema(
        user_vocabs=user_vocabs,
        item_vocab=item_vocab,
        action_vocab=action_vocab,
        genre_vocab=genre_vocab,
        item_table=item_table,
        release_year_mean=float(years.mean()) if years.size else 0.0,
        release_year_std=float(years.std()) if years.size > 1 and years.std() > 0 else 1.0,
        views=views,
    )
