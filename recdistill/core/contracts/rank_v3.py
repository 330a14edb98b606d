"""The columnar ranking request (`recdistill.v3.RankRequest`, protos/ranking_v3.proto): the user, the history
and the candidates as columns, numbers packed. `request_from_columns` is the server's reader: it checks each
column against the ids it describes and the schema's types, and hands the encoder the columns themselves
(`ColumnarRequest`: no Python object an event or a candidate, unless candidates override features).
`columns_from_dict` is the client helper (load tests, benchmarks, the demo's replay)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgspec

from recdistill.core._proto import ranking_v3_pb2
from recdistill.core.errors import ValidationError
from recdistill.core.features.request import (
    MAX_CANDIDATES,
    MAX_HISTORY_EVENTS,
    NUMBER_BOUND,
    REQUEST_ID_MAX_LENGTH,
    ColumnarRequest,
    HistoryColumns,
    RequestTypes,
    field_path,
)

CATEGORY_MAX_LENGTH = 1_000


def _rows(column: ranking_v3_pb2.Column, name: str) -> Sequence[Any]:
    """The column's values, from the one field that is filled (none filled: no rows); strings and numbers are
    the message's own containers (read lazily: a consumer that slices converts only the slice)."""
    strings, numbers, lists = column.strings, column.numbers, column.lists
    filled = (len(strings) > 0) + (len(numbers) > 0) + (len(lists) > 0)
    if filled > 1:
        raise ValidationError(name, "fill one of strings, numbers or lists, not several")
    if strings:
        return strings
    if numbers:
        return numbers
    return [list(entry.values) for entry in lists]


def _cells(columns: Any, entity: str) -> dict[str, Any]:
    """A one-row entity's features (user, context) from its columns."""
    out = {}
    for key, column in columns.items():
        rows = _rows(column, f"{entity}.{key}")
        if len(rows) != 1:
            raise ValidationError(f"{entity}.{key}", f"{len(rows)} rows; a {entity.split('_')[0]} column has 1")
        out[key] = rows[0]
    return out


def _convert(value: dict[str, Any], kind: type, prefix: str) -> Any:
    """`value` as the schema's struct, a failure named by its field (`prefix.field`)."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        message = str(exc)
        raise ValidationError(f"{prefix}.{field_path(message)}".rstrip("."), message.split(" - at ")[0]) from None


def _bounded(values: Sequence[float], name: str, low: float, high: float, what: str, nan: bool = True) -> None:
    """Every row within [low, high]; NaN allowed where `nan` (an unknown time, no value). The usual column (no
    NaN, in range) is checked in C (fsum, min, max); a row at fault is then found and named."""
    try:
        if math.isfinite(math.fsum(values)) and min(values) >= low and max(values) <= high:
            return
    except (OverflowError, ValueError):  # past the largest float, or inf - inf: a row out of range, found below
        pass
    for row, value in enumerate(values):
        if not (low <= value <= high) and not (nan and math.isnan(value)):
            raise ValidationError(f"{name}.{row}", f"{what}, got {value}")


def _history(message: ranking_v3_pb2.RankRequest, types: RequestTypes) -> HistoryColumns:
    ids = message.history_item_ids
    count = len(ids)
    if count > MAX_HISTORY_EVENTS:
        raise ValidationError("history_item_ids", f"{count} events, at most {MAX_HISTORY_EVENTS}")
    fields = types.history_event.__struct_fields__
    for name, column in (("history_ts", message.history_ts), ("history_values", message.history_values)):
        if len(column) not in (0, count):
            raise ValidationError(name, f"{len(column)} rows for {count} history_item_ids")
    # Numbers as lists, once (each pass over a message's container converts every element again).
    ts = list(message.history_ts) if message.history_ts else None
    values = list(message.history_values) if message.history_values else None
    if ts is not None:
        _bounded(ts, "history_ts", 0, types.ts_most, f"a unix time in [0, {types.ts_most:g}] (the schema's unit)")
    if values is not None:
        if "value" not in fields:
            raise ValidationError("history_values", "this schema's history carries no values")
        _bounded(values, "history_values", -NUMBER_BOUND, NUMBER_BOUND, f"a finite number within {NUMBER_BOUND:g}")
    actions = _rows(message.history_actions, "history_actions") if message.HasField("history_actions") else ()
    if actions:
        if "action" not in fields:
            raise ValidationError("history_actions", "this schema's history carries no actions")
        if len(actions) != count:
            raise ValidationError("history_actions", f"{len(actions)} rows for {count} history_item_ids")
        if message.history_actions.lists:
            raise ValidationError("history_actions", "an action is a string or a number, not a list")
        if message.history_actions.numbers:
            actions = list(actions)
            _bounded(actions, "history_actions", -NUMBER_BOUND, NUMBER_BOUND, "a finite number", nan=False)
        elif max(map(len, actions)) > CATEGORY_MAX_LENGTH:
            row = next(i for i, a in enumerate(actions) if len(a) > CATEGORY_MAX_LENGTH)
            raise ValidationError(f"history_actions.{row}", f"at most {CATEGORY_MAX_LENGTH} characters")
    return HistoryColumns(ids, ts, actions or None, values)


def _candidates(message: ranking_v3_pb2.RankRequest, types: RequestTypes) -> tuple[list[str], list[Any]]:
    ids = list(message.candidate_ids)
    if not ids:
        raise ValidationError("candidate_ids", "at least 1 candidate")
    if len(ids) > MAX_CANDIDATES:
        raise ValidationError("candidate_ids", f"{len(ids)} candidates, at most {MAX_CANDIDATES}")
    if not message.candidate_features:
        return ids, []
    columns = {}
    for key, column in message.candidate_features.items():
        rows = _rows(column, f"candidate_features.{key}")
        if len(rows) != len(ids):
            raise ValidationError(f"candidate_features.{key}", f"{len(rows)} rows for {len(ids)} candidate_ids")
        columns[key] = rows
    candidates = [_convert({"item_id": item, "features": {key: rows[row] for key, rows in columns.items()
                                                          if not _missing(rows[row])}},
                           types.candidate, f"candidate_features.{row}") for row, item in enumerate(ids)]
    return ids, candidates


def _missing(value: Any) -> bool:
    """A row a candidate does not override: NaN (numbers), "" (strings) or an empty list."""
    return value == "" or value == [] or (isinstance(value, float) and math.isnan(value))


def request_from_columns(message: ranking_v3_pb2.RankRequest, types: RequestTypes) -> ColumnarRequest:
    """The ranking request a columnar message carries, validated as the JSON body is; `ValidationError` names
    the column and the row (`history_ts.3`, `candidate_features.genres`, `user_features.age`)."""
    user = _convert({"user_id": message.user_id, **_cells(message.user_features, "user_features")}, types.user,
                    "user_features")
    context = None
    if message.HasField("context_ts") or message.context_features:
        cells = _cells(message.context_features, "context_features")
        if "ts" in cells:
            raise ValidationError("context_features.ts", "is a field of its own (context_ts), not a feature")
        if message.HasField("context_ts"):
            cells["ts"] = message.context_ts
        context = _convert(cells, types.context, "context_features")
    if message.HasField("request_id") and len(message.request_id) > REQUEST_ID_MAX_LENGTH:
        raise ValidationError("request_id", f"at most {REQUEST_ID_MAX_LENGTH} characters")
    ids, candidates = _candidates(message, types)
    return ColumnarRequest(user=user, context=context,
                           request_id=message.request_id if message.HasField("request_id") else None,
                           candidate_ids=ids, candidates=candidates, history_columns=_history(message, types))


def _column(values: list[Any]) -> ranking_v3_pb2.Column:
    """A feature column from its rows (strings, numbers or lists of strings; None: a row without it)."""
    given = [v for v in values if v is not None]
    if given and all(isinstance(v, list | tuple) for v in given):
        return ranking_v3_pb2.Column(lists=[ranking_v3_pb2.StringList(values=[str(x) for x in v or []])
                                            for v in values])
    if given and all(isinstance(v, int | float) and not isinstance(v, bool) for v in given):
        return ranking_v3_pb2.Column(numbers=[math.nan if v is None else float(v) for v in values])
    return ranking_v3_pb2.Column(strings=["" if v is None else str(v) for v in values])


def columns_from_dict(body: dict[str, Any]) -> ranking_v3_pb2.RankRequest:
    """The columnar message for a `/v1/rank` JSON body (clients, load tests); ids become strings."""
    user = dict(body["user"])
    history = body.get("history") or []
    message = ranking_v3_pb2.RankRequest(
        user_id=str(user.pop("user_id")),
        user_features={k: _column([v]) for k, v in user.items() if v is not None},
        history_item_ids=[str(e["item_id"]) for e in history],
        candidate_ids=[str(c["item_id"]) for c in body["candidates"]])
    if any(e.get("ts") is not None for e in history):
        message.history_ts.extend([math.nan if e.get("ts") is None else float(e["ts"]) for e in history])
    if any(e.get("action") is not None for e in history):
        message.history_actions.CopyFrom(ranking_v3_pb2.Column(strings=[str(e.get("action", "")) for e in history]))
    if any(e.get("value") is not None for e in history):
        message.history_values.extend([math.nan if e.get("value") is None else float(e["value"]) for e in history])
    overrides = [c.get("features") or {} for c in body["candidates"]]
    for key in sorted({k for features in overrides for k in features}):
        message.candidate_features[key].CopyFrom(_column([features.get(key) for features in overrides]))
    if body.get("request_id") is not None:
        message.request_id = body["request_id"]
    context = dict(body.get("context") or {})
    if context.get("ts") is not None:
        message.context_ts = float(context["ts"])
    for key, value in context.items():
        if key != "ts" and value is not None:
            message.context_features[key].CopyFrom(_column([value]))
    return message
