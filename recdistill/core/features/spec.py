"""The schema file: the one place a dataset's features are declared (TOML, validated by `SchemaSpec`).

Everything else derives from it: data preparation (source columns, label, vocabularies and statistics
from the training window), the encoder, the request struct, the model inputs, ONNX and Triton. A
schema file names *raw* source columns; requests carry the same raw values, and the encoder applies
the declared transforms (bucketising, hashing, prefixes, normalisation) identically in training and
serving. `schemas/schema.json` is this model's JSON Schema, for editors (`recdistill data schema`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recdistill.core.errors import SchemaError
from recdistill.core.features.label import label_columns

SPEC_FORMAT = 1
NAME = r"^[a-z][a-z0-9_]{0,62}$"
# Field names a request already uses for its own structure: no feature column may take them.
RESERVED_COLUMNS = frozenset({"user_id", "item_id", "ts", "action", "value", "features", "request_id"})
# Units of `source.timestamp` and of every `ts` in a ranking request, per second.
TIMESTAMP_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000}
TimestampUnit = Literal["s", "ms", "us"]
FeatureKind = Literal["categorical", "hashed", "multi_categorical", "numeric", "bucketized"]
Entity = Literal["user", "context", "item"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdSpec(_Spec):
    """How item ids become embedding rows: a vocabulary of the training window's ids seen at least
    `min_count` times, or `buckets` hashed buckets (high cardinality, new ids need no retraining)."""

    kind: Literal["categorical", "hashed"] = "categorical"
    min_count: Annotated[int, Field(ge=1)] = 1
    buckets: Annotated[int, Field(ge=2, le=50_000_000)] | None = None

    @model_validator(mode="after")
    def _buckets(self) -> IdSpec:
        if self.kind == "hashed" and self.buckets is None:
            raise ValueError("a hashed id needs `buckets`")
        return self


class SourceSpec(_Spec):
    """Columns of the interaction log (one row per impression or interaction)."""

    user_id: str = "user_id"
    item_id: str = "item_id"
    timestamp: str = Field("timestamp", description="unix time, in `timestamp_unit`")
    timestamp_unit: TimestampUnit = Field("s", description="the unit of `timestamp` (seconds, milliseconds or "
                                                           "microseconds); ranking requests carry `ts` in it too")
    label: str = Field(description="a 0/1 column, or an expression over columns such as `rating >= 4`")
    action: str | None = Field(None, description="per-event categorical (a rating, an event type); "
                                                 "the behaviour sequence carries it")
    value: str | None = Field(None, description="per-event number (a rating, dwell seconds); the sequence "
                                                "carries it when `sequence.value` is on")
    weight: str | None = Field(None, description="per-event training weight column")
    session: str | None = Field(None, description="a column that groups events into one visit or order (an order "
                                                  "id): own-history slate negatives leave out its items")
    items: IdSpec = IdSpec()

    @property
    def units_per_second(self) -> int:
        return TIMESTAMP_UNITS[self.timestamp_unit]

    @model_validator(mode="after")
    def _label_parses(self) -> SourceSpec:
        label_columns(self.label)  # raises naming the expression
        return self


class FeatureSpec(_Spec):
    """One user, context or item feature, read from the raw column `column` (default: `name`)."""

    name: Annotated[str, Field(pattern=NAME)]
    column: str | None = None
    kind: FeatureKind
    min_count: Annotated[int, Field(ge=1)] = Field(1, description="categorical, multi_categorical: values "
                                                                  "seen fewer times in training are OOV")
    buckets: Annotated[int, Field(ge=2, le=50_000_000)] | None = Field(None, description="hashed: buckets")
    boundaries: list[float] | None = Field(None, description="bucketized: increasing edges")
    prefix: Annotated[int, Field(ge=1)] | None = Field(None, description="categorical: only the first N "
                                                                           "characters (e.g. a zip prefix)")
    separator: str = Field("|", description="multi_categorical: separator inside a string cell")
    log: bool = Field(False, description="numeric: log1p before normalising (counts, prices)")
    default: float | None = Field(None, description="numeric: value for a missing cell (before the transform; "
                                                    "default: the training mean)")

    @property
    def source(self) -> str:
        return self.column or self.name

    @model_validator(mode="after")
    def _options(self) -> FeatureSpec:
        if self.kind == "hashed" and self.buckets is None:
            raise ValueError("a hashed feature needs `buckets`")
        if self.kind == "bucketized":
            if not self.boundaries:
                raise ValueError("a bucketized feature needs `boundaries`")
            if any(b >= a for b, a in zip(self.boundaries, self.boundaries[1:], strict=False)) or \
                    any(not np.isfinite(b) for b in self.boundaries):
                raise ValueError("`boundaries` must be finite and strictly increasing")
        if self.prefix is not None and self.kind not in ("categorical", "hashed"):
            raise ValueError("`prefix` applies to categorical and hashed features only")
        if self.kind == "multi_categorical" and self.default is not None:
            raise ValueError("`default` applies to numeric features only")
        if self.log and self.kind != "numeric":
            raise ValueError("`log` applies to numeric features only")
        if self.source in RESERVED_COLUMNS:
            raise ValueError(f"column name `{self.source}` is reserved by the request format")
        return self


class SequenceSpec(_Spec):
    """The behaviour sequence: item ids always; the action, the value and the time gap when on."""

    action: bool = True
    value: bool = False
    time_gap: bool = True


class SlateTask(_Spec):
    negatives: Annotated[int, Field(ge=1, le=999)] = 20
    positives: Literal["all", "label"] = Field("all", description="which events are slate positives: every "
                                                                  "interaction (a rating log), or those with "
                                                                  "label 1 (an impression log)")
    # On repeat-purchase data, negatives the user never touched make "was it bought before" a free answer.
    own_history_share: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.0, description="share of each slate's negatives drawn from the user's own earlier items that this "
                         "event's session does not contain (the rest: items not interacted with before)")


class TasksSpec(_Spec):
    ctr: bool = Field(True, description="logged impressions with their labels")
    slate: SlateTask | None = Field(SlateTask(), description="the next item among negatives the user had not "
                                                             "interacted with before that event")


class ViewSpec(_Spec):
    """What one model family reads: the most recent `history_len` events and these features (default all)."""

    history_len: Annotated[int, Field(ge=1, le=20_000)]
    features: list[str] | None = None
    # The user channel (students): the user id hashed into this many buckets of a `user_dim`-wide embedding,
    # read against each candidate (a user x candidate term). None: no user channel. A user whose bucket was
    # never trained reads the learned default alone.
    user_buckets: Annotated[int, Field(ge=2, le=50_000_000)] | None = None
    user_dim: Annotated[int, Field(ge=1, le=1_024)] = 32


SCENARIO_NAME = r"^[a-z][a-z0-9_-]{0,31}$"
DEFAULT_SCENARIO = "default"


class ScenarioSpec(_Spec):
    """One surface the students serve (`[[scenarios]]`): its task, the student's view (a `[views.X]` table:
    the features it reads and its history length) and its traffic: the traffic sources (the value of the
    server's traffic-source header) whose sampled requests its trainer takes besides those it served, every
    request when empty. A request chooses its scenario by route or field. One teacher labels every scenario."""

    name: Annotated[str, Field(pattern=SCENARIO_NAME)]
    task: Literal["slate", "ctr"] = "slate"
    view: str = "student"
    traffic: list[Annotated[str, Field(min_length=1, max_length=64)]] = []
    description: str = ""


class SchemaSpec(_Spec):
    """A dataset's feature schema file."""

    format: Literal[1] = SPEC_FORMAT
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    source: SourceSpec
    user_features: list[FeatureSpec] = []
    context_features: list[FeatureSpec] = []
    item_features: list[FeatureSpec] = []
    sequence: SequenceSpec = SequenceSpec()
    tasks: TasksSpec = TasksSpec()
    views: dict[str, ViewSpec]
    scenarios: list[ScenarioSpec] = Field([], description="the surfaces served; none declared: one, `default`, "
                                                          "on the student view and the first declared task")
    max_candidates: Annotated[int, Field(ge=1, le=1_000)] = 1_000

    @model_validator(mode="after")
    def _consistent(self) -> SchemaSpec:
        seen: set[str] = set()
        for feature in self.features():
            if feature.name in seen:
                raise ValueError(f"duplicate feature name `{feature.name}`")
            seen.add(feature.name)
        for entity in ("user", "context", "item"):
            columns: dict[str, str] = {}
            for feature in self.entity_features(entity):
                kind = "list" if feature.kind == "multi_categorical" else "value"
                if columns.setdefault(feature.source, kind) != kind:
                    raise ValueError(f"column `{feature.source}` is read both as a list and as a value")
        if any(f.kind == "multi_categorical" for f in [*self.user_features, *self.context_features]):
            raise ValueError("multi_categorical features are item features")
        for required in ("teacher", "student"):
            if required not in self.views:
                raise ValueError(f"`views` needs a `{required}` view")
        for view_name, view in self.views.items():
            unknown = sorted(set(view.features or ()) - seen)
            if unknown:
                raise ValueError(f"view `{view_name}` reads unknown feature(s) {unknown}")
        if self.sequence.value and self.source.value is None:
            raise ValueError("`sequence.value` is on but `source.value` names no column")
        if self.tasks.slate is None and not self.tasks.ctr:
            raise ValueError("declare at least one task")
        self._check_scenarios()
        return self

    def _check_scenarios(self) -> None:
        names = [s.name for s in self.scenarios]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate scenario name in {names}")
        for scenario in self.scenarios:
            if scenario.view not in self.views or scenario.view == "teacher":
                raise ValueError(f"scenario `{scenario.name}` reads view `{scenario.view}`, which is not a student "
                                 f"view of this schema (views: {sorted(set(self.views) - {'teacher'})})")
            if (self.tasks.slate if scenario.task == "slate" else self.tasks.ctr) in (None, False):
                raise ValueError(f"scenario `{scenario.name}` is a {scenario.task} task, which `tasks` does not "
                                 "declare")
            teacher, view, every = self.views["teacher"], self.views[scenario.view], self.feature_names()
            unserved = sorted(set(view.features or every) - set(teacher.features or every))
            problems = [f"its features {unserved} are not in the teacher's view"] if unserved else []
            if view.history_len > teacher.history_len:
                problems.append(f"it reads {view.history_len} history events, the teacher's view "
                                f"{teacher.history_len}")
            if problems:
                raise ValueError(f"scenario `{scenario.name}`: the teacher cannot serve its view `{scenario.view}` "
                                 f"({'; '.join(problems)})")

    def feature_names(self) -> list[str]:
        return [f.name for f in self.features()]

    @property
    def served_scenarios(self) -> list[ScenarioSpec]:
        """The declared scenarios, or the one implicit scenario of a schema that declares none."""
        if self.scenarios:
            return list(self.scenarios)
        return [ScenarioSpec(name=DEFAULT_SCENARIO, task="slate" if self.tasks.slate is not None else "ctr")]

    def features(self) -> Iterable[FeatureSpec]:
        yield from self.user_features
        yield from self.context_features
        yield from self.item_features

    def entity_features(self, entity: Entity) -> list[FeatureSpec]:
        return {"user": self.user_features, "context": self.context_features, "item": self.item_features}[entity]

    @cached_property
    def request_columns(self) -> dict[Entity, dict[str, bool]]:
        """Per entity, the raw columns a request carries -> whether the column holds a list."""
        return {entity: {f.source: f.kind == "multi_categorical" for f in self.entity_features(entity)}
                for entity in ("user", "context", "item")}

    def column_kind(self, entity: Entity, column: str) -> Literal["list", "number", "category"]:
        """What a request's raw column holds: a list of strings (multi-valued), a number (numeric or
        bucketized features read it) or a category (a string or a number compared as a string)."""
        kinds = {f.kind for f in self.entity_features(entity) if f.source == column}
        if "multi_categorical" in kinds:
            return "list"
        return "number" if kinds & {"numeric", "bucketized"} else "category"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the schema file, for editors (TOML language servers read it too)."""
    return SchemaSpec.model_json_schema() | {"$id": "https://rec-distill.dev/schema-file.json",
                                             "title": "Rec-Distill feature schema file"}


# ---- loading, with errors that name the line or the feature ---------------------------------------
def _line_of(text: str, needle: str, key: str | None = None) -> int | None:
    """The line of `key` in the table whose `name = "needle"` (the last such table: for a duplicate, the
    second one), else of that name line."""
    lines = text.splitlines()
    pattern = re.compile(rf"""^\s*name\s*=\s*["']{re.escape(needle)}["']""")
    found = None
    for number, line in enumerate(lines, start=1):
        if pattern.search(line):
            found = number
    if found is None or key is None:
        return found
    start = found
    while start > 1 and not lines[start - 1].lstrip().startswith("["):
        start -= 1
    end = found
    while end < len(lines) and not lines[end].lstrip().startswith("["):
        end += 1
    key_pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for number in range(start, end + 1):
        if key_pattern.search(lines[number - 1]):
            return number
    return found


def _describe(error: dict[str, Any], data: dict[str, Any], text: str) -> str:
    location = error["loc"]
    where = ".".join(str(part) for part in location) or "(top level)"
    if len(location) >= 2 and location[0] in ("user_features", "context_features", "item_features") and \
            isinstance(location[1], int):
        entries = data.get(location[0]) or []
        name = entries[location[1]].get("name") if location[1] < len(entries) and \
            isinstance(entries[location[1]], dict) else None
        if name:
            key = str(location[2]) if len(location) > 2 else None
            line = _line_of(text, str(name), key)
            where = f"feature `{name}` ({where}{f', line {line}' if line else ''})"
    message = error["msg"].removeprefix("Value error, ")
    named = re.search(r"feature name `([^`]+)`", message)
    line = _line_of(text, named.group(1)) if named else None
    return f"{where}: {message}{f' (line {line})' if line else ''}"


def parse_schema_spec(text: str, origin: str = "<schema>") -> SchemaSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SchemaError(f"{origin}: not valid TOML: {exc}") from None
    try:
        return SchemaSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(error, data, text) for error in exc.errors())
        raise SchemaError(f"{origin}: {problems}") from None


def load_schema_spec(path: Path) -> SchemaSpec:
    if not path.is_file():
        raise SchemaError(f"schema file not found: {path}")
    return parse_schema_spec(path.read_text(), str(path))
