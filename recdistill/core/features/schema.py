"""The fitted feature schema: a schema file (`spec.SchemaSpec`) plus what preparation learned from the
training window only (vocabularies, normalisation statistics) and the catalogue's item side features.

Index convention for every categorical: 0 = missing / padding, 1 = out-of-vocabulary, 2.. = known
(hashed: 2 + bucket; bucketized: 2 + bucket). Saved as features.json next to the data and in every
registry and model; its `hash` pins prepared data, teachers, students and the registry to it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recdistill.core.errors import DataError, SchemaMismatchError, UnknownScenarioError
from recdistill.core.features.request import RequestTypes, request_types
from recdistill.core.features.spec import ScenarioSpec, SchemaSpec
from recdistill.core.fileio import atomic_write_text

MISSING_INDEX = 0
OOV_INDEX = 1
FIRST_KNOWN_INDEX = 2
SCHEMA_FORMAT = 2
CATEGORICAL_KINDS = ("categorical", "hashed", "bucketized")


def canonical_action(action: object) -> str:
    """Actions (ratings, event types) are compared as strings; 4, 4.0 and "4" are the same action."""
    if action is None or (isinstance(action, float) and math.isnan(action)):
        return ""
    if isinstance(action, float) and action.is_integer():
        return str(int(action))
    return str(action)


def is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


@dataclass(frozen=True)
class ModelView:
    """What one model family reads: the most recent `history_len` events and these features."""

    history_len: int
    features: tuple[str, ...] = ()
    user_buckets: int = 0  # the user channel's hashed buckets (0: none)
    user_dim: int = 0


@dataclass
class FittedFeature:
    """A declared feature with its training-window fit."""

    name: str
    entity: str  # user | context | item
    kind: str  # categorical | hashed | bucketized | multi_categorical | numeric
    column: str  # the raw column (request field) it reads
    vocab: list[str] = field(default_factory=list)  # categorical, multi_categorical
    buckets: int = 0  # hashed
    boundaries: list[float] = field(default_factory=list)  # bucketized
    prefix: int | None = None
    separator: str = "|"
    log: bool = False
    mean: float = 0.0  # numeric, after the log transform
    std: float = 1.0
    default: float | None = None  # numeric: raw value for a missing cell (None: the mean, 0 once normalised)

    @property
    def rows(self) -> int:
        """Embedding rows of a categorical feature (missing, OOV and the known values or buckets)."""
        if self.kind == "hashed":
            return self.buckets + FIRST_KNOWN_INDEX
        if self.kind == "bucketized":
            return len(self.boundaries) + 1 + FIRST_KNOWN_INDEX
        return len(self.vocab) + FIRST_KNOWN_INDEX

    def category(self, value: object) -> str:
        text = canonical_action(value)
        return text[:self.prefix] if self.prefix else text


@dataclass(frozen=True)
class ViewGroups:
    """How a view's features fall into the model's input groups (see the encoder's tensor list)."""

    user_cat: list[FittedFeature]
    user_num: list[FittedFeature]
    cand_cat: list[FittedFeature]
    cand_multi: list[FittedFeature]
    cand_num: list[FittedFeature]
    has_action: bool
    has_value: bool
    has_time_gap: bool

    @property
    def multi_width(self) -> int:
        return sum(len(f.vocab) for f in self.cand_multi)


@dataclass
class FeatureSchema:
    name: str
    spec: dict[str, Any]  # the schema file's content
    features: list[FittedFeature]
    item_id_kind: str  # categorical | hashed
    item_vocab: list[str]  # categorical item ids
    item_buckets: int  # hashed item ids
    action_vocab: list[str]
    value_mean: float
    value_std: float
    # Raw side features of every catalogue item (known also for items never seen in training).
    item_table: dict[str, dict[str, Any]]
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

    @cached_property
    def spec_model(self) -> SchemaSpec:
        return SchemaSpec.model_validate(self.spec)

    def request_types(self, ignore_unknown: bool = False) -> RequestTypes:
        """The ranking request structs this schema's requests are validated with."""
        return request_types(self.spec_model, ignore_unknown)

    def parse_request(self, body: bytes | str | dict[str, Any]) -> Any:
        """Validate a ranking request for this schema; `ValidationError` names the field at fault."""
        return self.request_types().parse(body)

    @property
    def scenarios(self) -> list[ScenarioSpec]:
        """The surfaces served, the first being the default (`[[scenarios]]`, or the implicit `default`)."""
        return self.spec_model.served_scenarios

    @property
    def scenario_names(self) -> list[str]:
        return [s.name for s in self.scenarios]

    def scenario(self, name: str | None = None) -> ScenarioSpec:
        """A declared scenario by name (the first when None); `UnknownScenarioError` names the others."""
        found = next((s for s in self.scenarios if name is None or s.name == name), None)
        if found is None:
            raise UnknownScenarioError(str(name), self.scenario_names)
        return found

    def view(self, name: str) -> ModelView:
        if name not in self.views:
            raise DataError(f"unknown model view '{name}'; the schema has {sorted(self.views)}")
        return self.views[name]

    def feature(self, name: str) -> FittedFeature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def view_features(self, view: str, entities: tuple[str, ...], kinds: tuple[str, ...]) -> list[FittedFeature]:
        """The view's features of these entities and kinds, in schema order."""
        names = set(self.view(view).features)
        return [f for f in self.features if f.name in names and f.entity in entities and f.kind in kinds]

    def groups(self, view: str) -> ViewGroups:
        spec = self.spec_model
        return ViewGroups(
            user_cat=self.view_features(view, ("user", "context"), CATEGORICAL_KINDS),
            user_num=self.view_features(view, ("user", "context"), ("numeric",)),
            cand_cat=self.view_features(view, ("item",), CATEGORICAL_KINDS),
            cand_multi=self.view_features(view, ("item",), ("multi_categorical",)),
            cand_num=self.view_features(view, ("item",), ("numeric",)),
            has_action=bool(spec.source.action and spec.sequence.action),
            has_value=bool(spec.sequence.value),
            has_time_gap=spec.sequence.time_gap,
        )

    def vocab_size(self, what: str) -> int:
        """Embedding rows of the item ids ("item_id") or the sequence's actions ("action")."""
        if what == "item_id":
            return (self.item_buckets if self.item_id_kind == "hashed" else len(self.item_vocab)) + FIRST_KNOWN_INDEX
        if what == "action":
            return len(self.action_vocab) + FIRST_KNOWN_INDEX
        return self.feature(what).rows

    def _to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_hash")
        # A view without a user channel is written as before (its schema hash does not change).
        data["views"] = {name: {k: v for k, v in asdict(view).items() if k not in ("user_buckets", "user_dim") or
                                view.user_buckets} for name, view in sorted(self.views.items())}
        data["item_table"] = dict(sorted(self.item_table.items()))
        return data

    def _canonical_json(self) -> str:
        return json.dumps(self._to_dict(), sort_keys=True, separators=(",", ":"))

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self._to_dict() | {"hash": self.hash}))

    @classmethod
    def load(cls, path: Path) -> FeatureSchema:
        if not path.exists():
            raise DataError(f"feature schema not found: {path}")
        data = json.loads(path.read_text())
        if data.get("format") != SCHEMA_FORMAT:
            raise DataError(f"{path}: fitted schema format {data.get('format')} is not {SCHEMA_FORMAT}; "
                            "prepare the data again with this version")
        stored_hash = data.pop("hash", None)
        data["views"] = {name: ModelView(view["history_len"], tuple(view["features"]), view.get("user_buckets", 0),
                                         view.get("user_dim", 0)) for name, view in data["views"].items()}
        data["features"] = [FittedFeature(**feature) for feature in data["features"]]
        schema = cls(**data)
        if stored_hash is not None and stored_hash != schema.hash:
            raise DataError(f"{path}: content does not match its recorded hash (edited or corrupt)")
        return schema

    def require_hash(self, expected: str, what: str) -> None:
        if expected != self.hash:
            raise SchemaMismatchError(f"{what} was built for feature schema {expected}, serving uses {self.hash}")


# ---- fitting on the training window ----------------------------------------------------------------
def _vocab(counts: Counter[str], min_count: int) -> list[str]:
    return sorted(value for value, count in counts.items() if value and count >= min_count)


def split_list(value: object, separator: str) -> list[str]:
    """A multi-valued cell: a list (or array) as is, a string split on `separator`, missing -> []."""
    if isinstance(value, list | tuple | np.ndarray):
        return [str(v) for v in value if not is_missing(v)]
    if is_missing(value):
        return []
    return [part for part in str(value).split(separator) if part]


def _fit(spec_feature: Any, entity: str, values: pd.Series) -> FittedFeature:
    fitted = FittedFeature(name=spec_feature.name, entity=entity, kind=spec_feature.kind,
                           column=spec_feature.source, prefix=spec_feature.prefix, separator=spec_feature.separator,
                           log=spec_feature.log, default=spec_feature.default,
                           buckets=spec_feature.buckets or 0, boundaries=list(spec_feature.boundaries or ()))
    if spec_feature.kind == "categorical":
        fitted.vocab = _vocab(Counter(fitted.category(v) for v in values), spec_feature.min_count)
    elif spec_feature.kind == "multi_categorical":
        counts: Counter[str] = Counter(tag for cell in values for tag in split_list(cell, spec_feature.separator))
        fitted.vocab = _vocab(counts, spec_feature.min_count)
    elif spec_feature.kind == "numeric":
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        numbers = numbers[np.isfinite(numbers)]
        if spec_feature.log:
            numbers = np.log1p(np.clip(numbers, 0.0, None))
        fitted.mean = float(numbers.mean()) if numbers.size else 0.0
        std = float(numbers.std()) if numbers.size > 1 else 0.0
        fitted.std = std if std > 0 else 1.0
    return fitted


def _view(spec: SchemaSpec, name: str) -> ModelView:
    declared = spec.views[name]
    every = [f.name for f in spec.features()]
    reads = every if declared.features is None else [f for f in every if f in set(declared.features)]
    buckets = declared.user_buckets or 0
    return ModelView(declared.history_len, tuple(reads), buckets, declared.user_dim if buckets else 0)


def build_schema(spec: SchemaSpec, train_events: pd.DataFrame, users: pd.DataFrame,
                 items: pd.DataFrame) -> FeatureSchema:
    """Fit the schema file on the training window: `train_events` (normalised columns user_id, item_id,
    action, value and the context columns), `users` and `items` (one row each, raw feature columns)."""
    train_users = users[users["user_id"].isin(set(train_events["user_id"]))]
    item_counts = train_events["item_id"].value_counts()
    item_spec = spec.source.items
    item_vocab = sorted(item_counts[item_counts >= item_spec.min_count].index.astype(str)) \
        if item_spec.kind == "categorical" else []
    train_items = items[items["item_id"].isin(set(item_counts.index))]
    features = [_fit(f, "user", train_users[f.source]) for f in spec.user_features]
    features += [_fit(f, "context", train_events[f.source]) for f in spec.context_features]
    features += [_fit(f, "item", train_items[f.source]) for f in spec.item_features]
    action_vocab = sorted({canonical_action(a) for a in train_events["action"].unique()} - {""}) \
        if spec.source.action else []
    value_mean, value_std = 0.0, 1.0
    if spec.sequence.value:
        values = np.log1p(np.clip(pd.to_numeric(train_events["value"], errors="coerce").dropna().to_numpy(),
                                  0.0, None))
        value_mean = float(values.mean()) if values.size else 0.0
        value_std = float(values.std()) if values.size > 1 and values.std() > 0 else 1.0
    columns = list(dict.fromkeys(f.source for f in spec.item_features))
    item_table = {
        str(row["item_id"]): {column: _raw(row[column]) for column in columns}
        for row in items[["item_id", *columns]].to_dict("records")
    }
    return FeatureSchema(
        name=spec.name, spec=spec.model_dump(mode="json"), features=features, item_id_kind=item_spec.kind,
        item_vocab=item_vocab, item_buckets=item_spec.buckets or 0, action_vocab=action_vocab,
        value_mean=value_mean, value_std=value_std, item_table=item_table,
        views={name: _view(spec, name) for name in spec.views}, max_candidates=spec.max_candidates,
    )


def _raw(value: object) -> Any:
    """A cell as JSON can hold it: lists of strings, finite floats, strings, or None."""
    if isinstance(value, list | tuple | np.ndarray):
        return [str(v) for v in value]
    if is_missing(value):
        return None
    if isinstance(value, bool | np.bool_):
        return str(value)
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    return str(value)
