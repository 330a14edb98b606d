"""Debiasing of teacher soft labels and of logged traffic; each correction is separate and switchable.

- Calibration of teacher scores on fresh labelled data (Platt or isotonic), per teacher version.
- Inverse sampling-probability weights for sampled traffic.
- Sampling-space correction: a student trained on negative-subsampled data predicts odds / keep_rate;
  the teacher's probability is mapped into the same space so the two are compared on one footing.
(The position-bias tower lives in the student model and is used in training only.)
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from recdistill.core.metrics import ece

CalibrationMethod = Literal["none", "platt", "isotonic"]
_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


@dataclass
class Calibration:
    method: CalibrationMethod
    teacher_version: str
    ece_before: float = float("nan")
    ece_after: float = float("nan")
    _model: object | None = field(default=None, repr=False)

    def fit(self, teacher_probabilities: np.ndarray, labels: np.ndarray) -> Calibration:
        p, y = np.ravel(teacher_probabilities), np.ravel(labels)
        self.ece_before = ece(y, p)
        if self.method == "platt":
            self._model = LogisticRegression(C=1e4).fit(logit(p)[:, None], y)
        elif self.method == "isotonic":
            self._model = IsotonicRegression(y_min=_EPS, y_max=1 - _EPS, out_of_bounds="clip").fit(p, y)
        self.ece_after = ece(y, self.transform(p))
        return self

    def transform(self, teacher_probabilities: np.ndarray) -> np.ndarray:
        p = np.asarray(teacher_probabilities, dtype=np.float64)
        if self.method == "platt":
            out = self._model.predict_proba(logit(p.ravel())[:, None])[:, 1]  # type: ignore[union-attr]
        elif self.method == "isotonic":
            out = self._model.predict(p.ravel())  # type: ignore[union-attr]
        else:
            out = p.ravel()
        return out.reshape(p.shape).astype(np.float32)

    def to_bytes(self) -> bytes:
        """For the batch checkpoint: the streaming phase applies the same calibration."""
        return pickle.dumps(self)

    @staticmethod
    def from_bytes(data: bytes) -> Calibration:
        calibration = pickle.loads(data)  # noqa: S301 - our own checkpoint, written by to_bytes
        if not isinstance(calibration, Calibration):
            raise TypeError("not a pickled Calibration")
        return calibration


def inverse_propensity_weights(sampling_probability: np.ndarray, max_weight: float = 100.0) -> np.ndarray:
    """1 / p, clipped, normalised to mean 1 so the loss scale does not depend on the sampling rate."""
    weights = 1.0 / np.clip(np.asarray(sampling_probability, dtype=np.float64), 1.0 / max_weight, 1.0)
    return (weights / weights.mean()).astype(np.float32)


def to_sampled_space(probability: np.ndarray, negative_keep_rate: float) -> np.ndarray:
    """A probability on the full traffic, as a model trained with negatives kept at `rate` predicts it."""
    odds = np.asarray(probability, dtype=np.float64) / np.clip(1 - np.asarray(probability, np.float64), _EPS, None)
    odds = odds / negative_keep_rate
    return (odds / (1 + odds)).astype(np.float32)
