"""The teacher's inference callable for Triton: validate each request, pad the requests of a
dynamic batch to one shape, score, split the probabilities back per request.

Black box: inputs are the shared encoder's tensors, the only output is `probability` [candidates].
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from recdistill.core.contracts.teacher import TEACHER_OUTPUT
from recdistill.core.features.encoder import MODEL_INPUTS
from recdistill.core.features.schema import USER_CATEGORICALS, FeatureSchema
from teacher_service.model import TeacherModel

logger = logging.getLogger(__name__)

HISTORY_INPUTS = ("hist_item", "hist_action", "hist_recency")
CANDIDATE_INPUTS = ("cand_item", "cand_genres", "cand_year")
FIXED_WIDTH_INPUTS = ("user_cat", "hist_length")


class BadTeacherInput(ValueError):
    """A request Triton accepted by dtype and rank but whose content the teacher cannot score."""


class TeacherInference:
    def __init__(self, model: TeacherModel, schema: FeatureSchema, max_candidates: int, max_history: int) -> None:
        self.model = model
        self.schema = schema
        self.max_candidates = max_candidates
        self.max_history = max_history
        self._id_limits = {
            "hist_item": schema.vocab_size("item_id"), "cand_item": schema.vocab_size("item_id"),
            "hist_action": schema.vocab_size("action"),
        }
        self._user_limits = np.array([schema.vocab_size(name) for name in USER_CATEGORICALS])

    def validate(self, data: dict[str, np.ndarray]) -> None:
        lengths = {data[name].shape[1] for name in HISTORY_INPUTS}
        counts = {data[name].shape[1] for name in CANDIDATE_INPUTS}
        if len(lengths) != 1:
            raise BadTeacherInput(f"history inputs {HISTORY_INPUTS} must share one length, got {sorted(lengths)}")
        if len(counts) != 1:
            raise BadTeacherInput(f"candidate inputs {CANDIDATE_INPUTS} must share one count, got {sorted(counts)}")
        (length,), (count,) = lengths, counts
        if length > self.max_history:
            raise BadTeacherInput(f"history of {length} events exceeds the limit of {self.max_history}")
        if not 1 <= count <= self.max_candidates:
            raise BadTeacherInput(f"{count} candidates; between 1 and {self.max_candidates} are accepted")
        for name, limit in self._id_limits.items():
            values = data[name]
            if values.size and (values.min() < 0 or values.max() >= limit):
                raise BadTeacherInput(f"{name} holds ids outside [0, {limit}): not encoded with schema "
                                      f"{self.schema.hash}")
        users = data["user_cat"]
        if (users < 0).any() or (users >= self._user_limits).any():
            raise BadTeacherInput(f"user_cat holds ids outside the vocabularies of schema {self.schema.hash}")
        for name in ("hist_recency", "hist_length", "cand_genres", "cand_year"):
            if not np.isfinite(data[name]).all():
                raise BadTeacherInput(f"{name} holds NaN or infinite values")

    @staticmethod
    def _pad_concat(arrays: Sequence[np.ndarray]) -> np.ndarray:
        width = max(a.shape[1] for a in arrays)
        padded = [np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2)) for a in arrays]
        return np.concatenate(padded)

    def score(self, data: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return self.model(**{name: torch.from_numpy(np.ascontiguousarray(data[name]))
                                 for name in MODEL_INPUTS}).numpy()

    def __call__(self, requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        for request in requests:
            try:
                self.validate(request.data)
            except BadTeacherInput as exc:
                logger.warning("refused a teacher request: %s", exc)
                raise
        if len(requests) == 1:
            return [{TEACHER_OUTPUT: self.score(requests[0].data)}]
        merged = {}
        for name in MODEL_INPUTS:
            parts = [r.data[name] for r in requests]
            merged[name] = np.concatenate(parts) if name in FIXED_WIDTH_INPUTS else self._pad_concat(parts)
        scores = self.score(merged)
        out, start = [], 0
        for request in requests:
            rows, count = request.data["cand_item"].shape
            out.append({TEACHER_OUTPUT: scores[start:start + rows, :count]})
            start += rows
        return out
