"""The teacher's inference for Triton: validate each request, pad the valid requests of a dynamic batch to
one shape, score them in one call, split the probabilities back per request.

Black box: inputs are the shared encoder's tensors, the only output is `probability` [candidates].
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from recdistill.core.contracts.teacher import TEACHER_VIEW
from recdistill.core.features.encoder import Encoder
from recdistill.core.features.schema import FeatureSchema

logger = logging.getLogger(__name__)


class BadTeacherInput(ValueError):
    """A request Triton accepted by dtype and rank but whose content the teacher cannot score."""


class TeacherInference:
    def __init__(self, model: torch.nn.Module, schema: FeatureSchema, max_candidates: int, max_history: int,
                 device: torch.device | None = None) -> None:
        self.model = model
        self.device = device or torch.device("cpu")  # where the model is: inputs go there, scores come back
        self.schema = schema
        self.max_candidates = max_candidates
        self.max_history = max_history
        encoder = Encoder(schema, TEACHER_VIEW)
        self.input_names = encoder.input_names
        self._history_inputs = tuple(n for n in self.input_names if n.startswith("hist_") and n != "hist_length")
        self._candidate_inputs = tuple(n for n in self.input_names if n.startswith("cand_"))
        self._fixed_width = tuple(n for n in self.input_names if encoder.input_specs[n].dims[0] != -1)
        self._float_inputs = tuple(n for n, spec in encoder.input_specs.items() if spec.dtype == "FP32")
        self._id_limits = encoder.index_limits()

    def validate(self, data: dict[str, np.ndarray]) -> None:
        lengths = {data[name].shape[1] for name in self._history_inputs}
        counts = {data[name].shape[1] for name in self._candidate_inputs}
        if len(lengths) != 1:
            raise BadTeacherInput(f"history inputs {self._history_inputs} must share one length, "
                                  f"got {sorted(lengths)}")
        if len(counts) != 1:
            raise BadTeacherInput(f"candidate inputs {self._candidate_inputs} must share one count, "
                                  f"got {sorted(counts)}")
        (length,), (count,) = lengths, counts
        if length > self.max_history:
            raise BadTeacherInput(f"history of {length} events exceeds the limit of {self.max_history}")
        if not 1 <= count <= self.max_candidates:
            raise BadTeacherInput(f"{count} candidates; between 1 and {self.max_candidates} are accepted")
        for name, limit in self._id_limits.items():
            values = data[name]
            if values.size and ((values < 0).any() or (values >= limit).any()):
                raise BadTeacherInput(f"{name} holds ids outside the vocabularies of schema {self.schema.hash}")
        for name in self._float_inputs:
            if not np.isfinite(data[name]).all():
                raise BadTeacherInput(f"{name} holds NaN or infinite values")

    @staticmethod
    def _pad_concat(arrays: Sequence[np.ndarray]) -> np.ndarray:
        width = max(a.shape[1] for a in arrays)
        padded = [np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2)) for a in arrays]
        return np.concatenate(padded)

    def score(self, data: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return self.model(**{name: torch.from_numpy(np.ascontiguousarray(data[name])).to(self.device)
                                 for name in self.input_names}).cpu().numpy()

    def score_requests(self, requests: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray | BadTeacherInput]:
        """One dynamic batch: each request's probabilities, or the reason it is refused. A refused request
        never fails the others: the valid ones are padded to one shape and scored in one call."""
        outcomes: list[np.ndarray | BadTeacherInput] = []
        valid = []
        for data in requests:
            try:
                self.validate(data)
            except BadTeacherInput as exc:
                logger.warning("refused a teacher request: %s", exc)
                outcomes.append(exc)
                continue
            outcomes.append(np.empty(0, np.float32))  # filled below
            valid.append(len(outcomes) - 1)
        if not valid:
            return outcomes
        if len(valid) == 1:
            outcomes[valid[0]] = self.score(requests[valid[0]])
            return outcomes
        merged = {}
        for name in self.input_names:
            parts = [requests[i][name] for i in valid]
            merged[name] = np.concatenate(parts) if name in self._fixed_width else self._pad_concat(parts)
        scores, start = self.score(merged), 0
        for i in valid:
            rows, count = requests[i]["cand_item"].shape
            outcomes[i] = scores[start:start + rows, :count]
            start += rows
        return outcomes
