"""The one encoder: dataset rows and ranking requests become the same model tensors.

Two stages, shared by every path:
1. mapping: raw ids and values -> integer indices and normalised numbers (`MappedContext`);
   requests are mapped by `map_request`, dataset timelines by the same `map_items` / `map_actions` /
   `map_user` / `map_candidates` primitives.
2. assembly: a batch of mapped contexts -> padded numpy tensors (`assemble`), windowing the history
   to the view's most recent `history_len` events (longer histories are truncated, by design).

Model input tensors (B = batch, L = history window, C = candidates, G = genres):
  user_cat int64 [B, 5], hist_item int64 [B, L], hist_action int64 [B, L], hist_recency float32 [B, L],
  hist_length float32 [B, 1], cand_item int64 [B, C], cand_genres float32 [B, C, G], cand_year float32 [B, C].
Padding uses index 0 / value 0; `cand_mask` (not a model input) marks real candidates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np

from recdistill.core.features.request import Candidate, RankRequest
from recdistill.core.features.schema import (
    FIRST_KNOWN_INDEX,
    MISSING_INDEX,
    OOV_INDEX,
    USER_CATEGORICALS,
    FeatureSchema,
    age_bucket,
    canonical_action,
    zip_prefix,
)

MODEL_INPUTS = (
    "user_cat", "hist_item", "hist_action", "hist_recency", "hist_length", "cand_item", "cand_genres", "cand_year",
)
Tensors = dict[str, np.ndarray]


@dataclass
class MappedContext:
    user_cat: np.ndarray  # int64 [5]
    hist_item: np.ndarray  # int64 [n], oldest first (may already be cut to the window)
    hist_action: np.ndarray  # int64 [n]
    hist_ts: np.ndarray  # float64 [n], NaN where unknown
    history_length: int  # events in the full history, before any cut
    request_ts: float  # NaN where unknown
    cand_item: np.ndarray  # int64 [C]
    cand_genres: np.ndarray  # float32 [C, G]
    cand_year: np.ndarray  # float32 [C]


def _vocab_index(values: Sequence[str]) -> dict[str, int]:
    return {value: position + FIRST_KNOWN_INDEX for position, value in enumerate(values)}


class Encoder:
    def __init__(self, schema: FeatureSchema, view: str) -> None:
        self.schema = schema
        self.view_name = view
        self.history_len = schema.view(view).history_len
        self._user_index = {name: _vocab_index(schema.user_vocabs[name]) for name in USER_CATEGORICALS}
        self._item_index = _vocab_index(schema.item_vocab)
        self._action_index = _vocab_index(schema.action_vocab)
        self._genre_index = {genre: i for i, genre in enumerate(schema.genre_vocab)}
        # Candidates are looked up once: every id known to the vocabulary or the catalogue gets a row
        # of these tables (row 0: unknown id, no side features).
        known = list(dict.fromkeys([*schema.item_vocab, *schema.item_table]))
        self._candidate_row = {item: row for row, item in enumerate(known, start=1)}
        self._candidate_item = np.array([OOV_INDEX] + [self._item_index.get(i, OOV_INDEX) for i in known],
                                        dtype=np.int64)
        self._genre_table = np.zeros((len(known) + 1, schema.num_genres), dtype=np.float32)
        self._year_table = np.zeros(len(known) + 1, dtype=np.float32)
        for item, (genres, year) in schema.item_table.items():
            row = self._candidate_row[item]
            self._genre_table[row] = self._genres(genres)
            self._year_table[row] = self._year(year)

    # ---- stage 1: mapping -------------------------------------------------------------------
    def _genres(self, genres: Sequence[str]) -> np.ndarray:
        vector = np.zeros(self.schema.num_genres, dtype=np.float32)
        for genre in genres:
            position = self._genre_index.get(genre)
            if position is not None:
                vector[position] = 1.0
        return vector

    def _year(self, year: float | None) -> float:
        if year is None or math.isnan(year):
            return 0.0
        return (year - self.schema.release_year_mean) / self.schema.release_year_std

    def map_items(self, item_ids: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(self._item_index.get, item_ids, repeat(OOV_INDEX)), dtype=np.int64,
                           count=len(item_ids))

    def map_actions(self, actions: Sequence[str]) -> np.ndarray:
        index = self._action_index
        return np.fromiter(
            (index.get(a, OOV_INDEX) if a else MISSING_INDEX for a in actions), dtype=np.int64, count=len(actions)
        )

    def map_user(
        self, user_id: str, age: float | None, gender: str | None, occupation: str | None, zip_code: str | None
    ) -> np.ndarray:
        raw = (user_id, age_bucket(age), gender or "", occupation or "", zip_prefix(zip_code))
        return np.array(
            [self._user_index[name].get(value, OOV_INDEX) if value else MISSING_INDEX
             for name, value in zip(USER_CATEGORICALS, raw, strict=True)],
            dtype=np.int64,
        )

    def map_candidates(
        self, item_ids: Sequence[str], overrides: Sequence[Candidate] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = np.fromiter(map(self._candidate_row.get, item_ids, repeat(0)), dtype=np.int64, count=len(item_ids))
        genres, years = self._genre_table[rows], self._year_table[rows]
        for position, candidate in enumerate(overrides or ()):
            if candidate.features is not None:
                if candidate.features.genres is not None:
                    genres[position] = self._genres(candidate.features.genres)
                if candidate.features.release_year is not None:
                    years[position] = self._year(float(candidate.features.release_year))
        return self._candidate_item[rows], genres, years

    def map_request(self, request: RankRequest, now: float | None = None,
                    candidate_ids: Sequence[str] | None = None) -> MappedContext:
        """`candidate_ids`: the candidates' ids as strings, when the caller has them already."""
        user = request.user
        window = request.history[-self.history_len:] if self.history_len else []
        request_ts = request.context.ts if request.context and request.context.ts is not None else None
        cand_item, cand_genres, cand_year = self.map_candidates(
            candidate_ids if candidate_ids is not None else [str(c.item_id) for c in request.candidates],
            request.candidates,
        )
        return MappedContext(
            user_cat=self.map_user(
                str(user.user_id), None if user.age is None else float(user.age),
                user.gender, user.occupation, user.zip_code,
            ),
            hist_item=self.map_items([str(e.item_id) for e in window]),
            hist_action=self.map_actions([canonical_action(e.action) for e in window]),
            hist_ts=np.array([math.nan if e.ts is None else float(e.ts) for e in window], dtype=np.float64),
            history_length=len(request.history),
            request_ts=float(request_ts) if request_ts is not None else (now or time.time()),
            cand_item=cand_item,
            cand_genres=cand_genres,
            cand_year=cand_year,
        )

    # ---- stage 2: assembly ------------------------------------------------------------------
    def assemble(self, contexts: Sequence[MappedContext]) -> tuple[Tensors, np.ndarray]:
        """Pad a batch to tensors; returns (model inputs, cand_mask)."""
        batch = len(contexts)
        window = max([min(len(c.hist_item), self.history_len) for c in contexts] + [1])
        candidates = max(len(c.cand_item) for c in contexts)
        out: Tensors = {
            "user_cat": np.stack([c.user_cat for c in contexts]),
            "hist_item": np.zeros((batch, window), dtype=np.int64),
            "hist_action": np.zeros((batch, window), dtype=np.int64),
            "hist_recency": np.zeros((batch, window), dtype=np.float32),
            "hist_length": np.zeros((batch, 1), dtype=np.float32),
            "cand_item": np.zeros((batch, candidates), dtype=np.int64),
            "cand_genres": np.zeros((batch, candidates, self.schema.num_genres), dtype=np.float32),
            "cand_year": np.zeros((batch, candidates), dtype=np.float32),
        }
        mask = np.zeros((batch, candidates), dtype=bool)
        for row, context in enumerate(contexts):
            n = min(len(context.hist_item), self.history_len)
            if n:
                out["hist_item"][row, :n] = context.hist_item[-n:]
                out["hist_action"][row, :n] = context.hist_action[-n:]
                hours = (context.request_ts - context.hist_ts[-n:]) / 3600.0
                out["hist_recency"][row, :n] = np.nan_to_num(np.log1p(np.clip(hours, 0.0, None)), nan=0.0)
            out["hist_length"][row, 0] = math.log1p(context.history_length)
            c = len(context.cand_item)
            out["cand_item"][row, :c] = context.cand_item
            out["cand_genres"][row, :c] = context.cand_genres
            out["cand_year"][row, :c] = context.cand_year
            mask[row, :c] = True
        return out, mask

    def encode_requests(self, requests: Sequence[RankRequest], now: float | None = None) -> tuple[Tensors, np.ndarray]:
        return self.assemble([self.map_request(r, now) for r in requests])
