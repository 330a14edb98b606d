"""The one encoder: dataset rows and ranking requests become the same model tensors, for any schema.

Two stages, shared by every path:
1. mapping: raw values -> integer indices and normalised numbers (`MappedContext`); requests are
   mapped by `map_request`, dataset rows by the same `map_profile` / `map_items` / `map_actions` /
   `map_values` / `map_candidates` primitives.
2. assembly: a batch of mapped contexts -> padded numpy tensors (`assemble`), windowing the history
   to the view's most recent `history_len` events (longer histories are truncated, by design).

Model input tensors of a view (B = batch, L = history window, C = candidates); a group the view has no
feature for is left out, so the input signature follows the schema (`input_specs`):
  user_cat int64 [B, Uc]     user and context categoricals (categorical, hashed, bucketized)
  user_num float32 [B, Un]   user and context numerics, normalised on the training window
  user_hash int64 [B, 1]     the user id's hashed bucket (views with a user channel; 0: no id)
  hist_item int64 [B, L], hist_action int64 [B, L] (if the sequence carries actions),
  hist_value float32 [B, L] (if it carries values), hist_recency float32 [B, L], hist_length float32 [B, 1]
  cand_item int64 [B, C], cand_cat int64 [B, C, Ic], cand_multi float32 [B, C, M] (multi-hot of every
  multi-valued item feature, concatenated), cand_num float32 [B, C, In]
Padding uses index 0 / value 0; `cand_mask` (not a model input) marks real candidates.
"""

from __future__ import annotations

import bisect
import math
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter
from typing import Any

import numpy as np
from msgspec import Struct

from recdistill.core.features.schema import (
    FIRST_KNOWN_INDEX,
    MISSING_INDEX,
    OOV_INDEX,
    FeatureSchema,
    FittedFeature,
    canonical_action,
    is_missing,
    split_list,
)

Tensors = dict[str, np.ndarray]
_FEATURES = attrgetter("features")
INT64, FLOAT32 = "INT64", "FP32"


class TensorSpec(Struct, frozen=True):
    """One model input or output: name, Triton dtype name and the dims after the batch dimension."""

    name: str
    dtype: str  # INT64 | FP32 (Triton's names)
    dims: tuple[int, ...]  # -1 is variable

    @property
    def numpy_dtype(self) -> type:
        return np.int64 if self.dtype == INT64 else np.float32


@dataclass
class MappedContext:
    user_cat: np.ndarray  # int64 [Uc]
    user_num: np.ndarray  # float32 [Un]
    hist_item: np.ndarray  # int64 [n], oldest first (may already be cut to the window)
    hist_action: np.ndarray  # int64 [n]
    hist_value: np.ndarray  # float32 [n]
    hist_ts: np.ndarray  # float64 [n], NaN where unknown
    history_length: int  # events in the full history, before any cut
    request_ts: float  # NaN where unknown
    cand_item: np.ndarray  # int64 [C]
    cand_cat: np.ndarray  # int64 [C, Ic]
    cand_multi: np.ndarray  # float32 [C, M]
    cand_num: np.ndarray  # float32 [C, In]
    user_hash: int = MISSING_INDEX  # the user channel's bucket (views with one)


def stable_hash(text: str) -> int:
    """The same bucket on every machine and run (Python's own hash is salted per process)."""
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def _vocab_index(values: Sequence[str]) -> dict[str, int]:
    return {value: position + FIRST_KNOWN_INDEX for position, value in enumerate(values)}


class Encoder:
    def __init__(self, schema: FeatureSchema, view: str, history_len: int | None = None) -> None:
        """`history_len`: a shorter window than the view's (a model that reads fewer events)."""
        self.schema = schema
        self.view_name = view
        self.history_len = min(schema.view(view).history_len, history_len or schema.view(view).history_len)
        groups = schema.groups(view)
        self.user_cat, self.user_num = groups.user_cat, groups.user_num
        self.cand_cat, self.cand_multi, self.cand_num = groups.cand_cat, groups.cand_multi, groups.cand_num
        self.has_action, self.has_value, self.has_time_gap = groups.has_action, groups.has_value, groups.has_time_gap
        self.multi_width = groups.multi_width
        self.user_buckets = schema.view(view).user_buckets
        self._index = {f.name: _vocab_index(f.vocab) for f in schema.features if f.kind in ("categorical",
                                                                                            "multi_categorical")}
        self._item_index = _vocab_index(schema.item_vocab)
        self._units_per_second = float(schema.spec_model.source.units_per_second)  # request times -> seconds
        self._action_index = _vocab_index(schema.action_vocab)
        self.input_specs = self._input_specs()
        self.input_names = tuple(self.input_specs)
        # Candidates are looked up once: every id known to the vocabulary or the catalogue gets a row
        # of these tables (row 0: unknown id, no side features).
        known = list(dict.fromkeys([*schema.item_vocab, *schema.item_table]))
        self._candidate_row = {item: row for row, item in enumerate(known, start=1)}
        self._candidate_item = np.concatenate([[OOV_INDEX], self.map_items(known)]).astype(np.int64)
        self._cat_table = np.zeros((len(known) + 1, len(self.cand_cat)), dtype=np.int64)
        self._multi_table = np.zeros((len(known) + 1, self.multi_width), dtype=np.float32)
        self._num_table = np.zeros((len(known) + 1, len(self.cand_num)), dtype=np.float32)
        self._num_table[0] = self._numbers(self.cand_num, {})
        for item, raw in schema.item_table.items():
            row = self._candidate_row[item]
            self._cat_table[row], self._multi_table[row], self._num_table[row] = self._item_row(raw)

    def _input_specs(self) -> dict[str, TensorSpec]:
        groups: list[tuple[str, str, tuple[int, ...], bool]] = [
            ("user_cat", INT64, (len(self.user_cat),), bool(self.user_cat)),
            ("user_num", FLOAT32, (len(self.user_num),), bool(self.user_num)),
            ("user_hash", INT64, (1,), self.user_buckets > 0),
            ("hist_item", INT64, (-1,), True),
            ("hist_action", INT64, (-1,), self.has_action),
            ("hist_value", FLOAT32, (-1,), self.has_value),
            ("hist_recency", FLOAT32, (-1,), True),
            ("hist_length", FLOAT32, (1,), True),
            ("cand_item", INT64, (-1,), True),
            ("cand_cat", INT64, (-1, len(self.cand_cat)), bool(self.cand_cat)),
            ("cand_multi", FLOAT32, (-1, self.multi_width), self.multi_width > 0),
            ("cand_num", FLOAT32, (-1, len(self.cand_num)), bool(self.cand_num)),
        ]
        return {name: TensorSpec(name, dtype, dims) for name, dtype, dims, present in groups if present}

    def index_limits(self) -> dict[str, np.ndarray]:
        """Exclusive upper bound of every integer input (per column where columns differ): what a model's
        embedding tables can look up."""
        limits = {"hist_item": np.array(self.schema.vocab_size("item_id")),
                  "cand_item": np.array(self.schema.vocab_size("item_id")),
                  "hist_action": np.array(self.schema.vocab_size("action")),
                  "user_cat": np.array([f.rows for f in self.user_cat], dtype=np.int64),
                  "cand_cat": np.array([f.rows for f in self.cand_cat], dtype=np.int64),
                  "user_hash": np.array(self.user_buckets + FIRST_KNOWN_INDEX)}
        return {name: limit for name, limit in limits.items() if name in self.input_specs}

    # ---- stage 1: mapping -------------------------------------------------------------------
    def user_bucket(self, user_id: object) -> int:
        """The user channel's row of a user id (strings and integers alike: 7 and "7" are one user); 0 without
        an id or a channel."""
        if not self.user_buckets or is_missing(user_id):
            return MISSING_INDEX
        return FIRST_KNOWN_INDEX + stable_hash(canonical_action(user_id)) % self.user_buckets

    def category_index(self, feature: FittedFeature, raw: object) -> int:
        if is_missing(raw):
            return MISSING_INDEX
        if feature.kind == "bucketized":
            try:
                number = float(raw)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return OOV_INDEX
            return FIRST_KNOWN_INDEX + bisect.bisect_right(feature.boundaries, number) if math.isfinite(number) \
                else OOV_INDEX
        value = feature.category(raw)
        if not value:
            return MISSING_INDEX
        if feature.kind == "hashed":
            return FIRST_KNOWN_INDEX + stable_hash(value) % feature.buckets
        return self._index[feature.name].get(value, OOV_INDEX)

    @staticmethod
    def number(feature: FittedFeature, raw: object) -> float:
        value = feature.default if is_missing(raw) else raw
        if value is None:
            return 0.0
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return 0.0
        if not math.isfinite(number):
            return 0.0
        if feature.log:
            number = math.log1p(max(number, 0.0))
        return (number - feature.mean) / feature.std

    def _numbers(self, features: Sequence[FittedFeature], raw: Mapping[str, Any]) -> np.ndarray:
        return np.array([self.number(f, raw.get(f.column)) for f in features], dtype=np.float32)

    def _item_row(self, raw: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cats = np.array([self.category_index(f, raw.get(f.column)) for f in self.cand_cat], dtype=np.int64)
        multi = np.zeros(self.multi_width, dtype=np.float32)
        offset = 0
        for feature in self.cand_multi:
            index = self._index[feature.name]
            for tag in split_list(raw.get(feature.column), feature.separator):
                position = index.get(tag)
                if position is not None:
                    multi[offset + position - FIRST_KNOWN_INDEX] = 1.0
            offset += len(feature.vocab)
        return cats, multi, self._numbers(self.cand_num, raw)

    def map_profile(self, user: Mapping[str, Any], context: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(user_cat, user_num) from the raw user columns and the raw context columns."""
        def raw(feature: FittedFeature) -> object:
            return (context if feature.entity == "context" else user).get(feature.column)

        cats = np.array([self.category_index(f, raw(f)) for f in self.user_cat], dtype=np.int64)
        nums = np.array([self.number(f, raw(f)) for f in self.user_num], dtype=np.float32)
        return cats, nums

    def map_items(self, item_ids: Sequence[str]) -> np.ndarray:
        if self.schema.item_id_kind == "hashed":
            buckets = self.schema.item_buckets
            return np.fromiter((FIRST_KNOWN_INDEX + stable_hash(i) % buckets if i else MISSING_INDEX
                                for i in item_ids), dtype=np.int64, count=len(item_ids))
        return np.fromiter(map(self._item_index.get, item_ids, repeat(OOV_INDEX)), dtype=np.int64,
                           count=len(item_ids))

    def map_actions(self, actions: Sequence[str]) -> np.ndarray:
        index = self._action_index
        return np.fromiter(
            (index.get(a, OOV_INDEX) if a else MISSING_INDEX for a in actions), dtype=np.int64, count=len(actions)
        )

    def map_values(self, values: Sequence[object]) -> np.ndarray:
        """Per-event numbers (ratings, dwell): log1p, then normalised on the training window; missing -> 0."""
        out = np.zeros(len(values), dtype=np.float32)
        for i, value in enumerate(values):
            if not is_missing(value):
                number = float(value)  # type: ignore[arg-type]
                if math.isfinite(number):
                    out[i] = (math.log1p(max(number, 0.0)) - self.schema.value_mean) / self.schema.value_std
        return out

    def map_candidates(self, item_ids: Sequence[str], overrides: Sequence[Any] | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(cand_item, cand_cat, cand_multi, cand_num); `overrides`: request candidates whose `features`
        replace the catalogue's raw columns of that item."""
        rows = np.fromiter(map(self._candidate_row.get, item_ids, repeat(0)), dtype=np.int64, count=len(item_ids))
        cats, multi, nums = self._cat_table[rows], self._multi_table[rows], self._num_table[rows]
        # Most candidates override nothing: find those that do in C (attrgetter), not one getattr a candidate.
        overriding = list(map(_FEATURES, overrides)) if overrides and hasattr(overrides[0], "features") else []
        if overriding.count(None) == len(overriding):
            overriding = []
        for position, features in enumerate(overriding):
            if features is not None:
                raw = dict(self.schema.item_table.get(item_ids[position]) or {})
                for column in self.schema.spec_model.request_columns["item"]:
                    value = getattr(features, column, None)
                    if value is not None:
                        raw[column] = value
                cats[position], multi[position], nums[position] = self._item_row(raw)
        return self._candidate_item[rows], cats, multi, nums

    def map_request(self, request: Any, now: float | None = None,
                    candidate_ids: Sequence[str] | None = None) -> MappedContext:
        """`candidate_ids`: the candidates' ids as strings, when the caller has them already."""
        columns = self.schema.spec_model.request_columns
        user = {column: getattr(request.user, column, None) for column in columns["user"]}
        context = {column: getattr(request.context, column, None) for column in columns["context"]} \
            if request.context is not None else {}
        user_cat, user_num = self.map_profile(user, context)
        request_ts = request.context.ts if request.context is not None and request.context.ts is not None else None
        if candidate_ids is None:  # a columnar request has them as a column
            candidate_ids = getattr(request, "candidate_ids", None) or [str(c.item_id) for c in request.candidates]
        cand_item, cand_cat, cand_multi, cand_num = self.map_candidates(candidate_ids, request.candidates)
        columns = getattr(request, "history_columns", None)  # the columnar wire form: no object an event
        hist_item, hist_action, hist_value, hist_ts = (self._window(request.history) if columns is None
                                                       else self._window_columns(columns))
        return MappedContext(
            user_cat=user_cat, user_num=user_num, hist_item=hist_item, hist_action=hist_action,
            hist_value=hist_value, hist_ts=hist_ts / self._units_per_second, history_length=len(request.history),
            request_ts=float(request_ts) / self._units_per_second if request_ts is not None else (now or time.time()),
            cand_item=cand_item, cand_cat=cand_cat, cand_multi=cand_multi, cand_num=cand_num,
            user_hash=self.user_bucket(getattr(request.user, "user_id", None)),
        )

    def _window(self, history: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(items, actions, values, times in the schema's unit) of the view's most recent events."""
        window = history[-self.history_len:] if self.history_len else []
        return (self.map_items([str(e.item_id) for e in window]),
                self.map_actions([canonical_action(e.action) for e in window]) if self.has_action
                else np.zeros(len(window), dtype=np.int64),
                self.map_values([e.value for e in window]) if self.has_value
                else np.zeros(len(window), dtype=np.float32),
                np.array([math.nan if e.ts is None else float(e.ts) for e in window], dtype=np.float64))

    def _window_columns(self, columns: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """`_window` of a `HistoryColumns`."""
        start = max(0, len(columns) - self.history_len) if self.history_len else len(columns)
        size = len(columns) - start
        actions = columns.actions
        return (self.map_items(columns.item_ids[start:]),
                self.map_actions([canonical_action(a) for a in actions[start:]]) if self.has_action and actions
                else np.zeros(size, dtype=np.int64),
                self.map_values(columns.values[start:]) if self.has_value and columns.values is not None
                else np.zeros(size, dtype=np.float32),
                columns.times(start))

    # ---- stage 2: assembly ------------------------------------------------------------------
    def assemble(self, contexts: Sequence[MappedContext]) -> tuple[Tensors, np.ndarray]:
        """Pad a batch to tensors; returns (model inputs, cand_mask)."""
        batch = len(contexts)
        window = max([min(len(c.hist_item), self.history_len) for c in contexts] + [1])
        candidates = max(len(c.cand_item) for c in contexts)
        specs = self.input_specs
        out: Tensors = {}
        if "user_cat" in specs:
            out["user_cat"] = np.stack([c.user_cat for c in contexts])
        if "user_num" in specs:
            out["user_num"] = np.stack([c.user_num for c in contexts])
        if "user_hash" in specs:
            out["user_hash"] = np.array([[c.user_hash] for c in contexts], dtype=np.int64)
        for name in ("hist_item", "hist_action"):
            if name in specs:
                out[name] = np.zeros((batch, window), dtype=np.int64)
        for name in ("hist_value", "hist_recency"):
            if name in specs:
                out[name] = np.zeros((batch, window), dtype=np.float32)
        out["hist_length"] = np.zeros((batch, 1), dtype=np.float32)
        out["cand_item"] = np.zeros((batch, candidates), dtype=np.int64)
        for name, dtype in (("cand_cat", np.int64), ("cand_multi", np.float32), ("cand_num", np.float32)):
            if name in specs:
                out[name] = np.zeros((batch, candidates, specs[name].dims[1]), dtype=dtype)
        mask = np.zeros((batch, candidates), dtype=bool)
        for row, context in enumerate(contexts):
            out["hist_length"][row, 0] = math.log1p(context.history_length)
            n = min(len(context.hist_item), self.history_len)
            if n:
                out["hist_item"][row, :n] = context.hist_item[-n:]
                if self.has_action:
                    out["hist_action"][row, :n] = context.hist_action[-n:]
                if self.has_value:
                    out["hist_value"][row, :n] = context.hist_value[-n:]
                if self.has_time_gap:
                    hours = (context.request_ts - context.hist_ts[-n:]) / 3600.0
                    # fmax(NaN, 0) is 0: an event without a time reads as "just now", as nan_to_num made it
                    out["hist_recency"][row, :n] = np.log1p(np.fmax(hours, 0.0))
            c = len(context.cand_item)
            out["cand_item"][row, :c] = context.cand_item
            for name in ("cand_cat", "cand_multi", "cand_num"):
                if name in out:
                    out[name][row, :c] = getattr(context, name)
            mask[row, :c] = True
        return {name: out[name] for name in self.input_names}, mask

    def encode_requests(self, requests: Sequence[Any], now: float | None = None) -> tuple[Tensors, np.ndarray]:
        return self.assemble([self.map_request(r, now) for r in requests])
