"""Debiasing of teacher soft labels and of logged traffic; each correction is separate and switchable.

- Calibration of teacher scores on fresh labelled data (Platt or isotonic), per teacher version.
- Inverse sampling-probability weights for sampled traffic.
- Sampling-space correction: a student trained on negative-subsampled data predicts odds / keep_rate;
  the teacher's probability is mapped into the same space so the two are compared on one footing.
(The position-bias tower lives in the student model and is used in training only.)
"""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from recdistill.core.contracts.worker import PROBABILITY_EPS, Calibration, CalibrationMethod, logit
from recdistill.core.metrics import ece

__all__ = ["Calibration", "CalibrationMethod", "fit_calibration", "inverse_propensity_weights", "to_sampled_space"]


def fit_calibration(method: CalibrationMethod, teacher_version: str, teacher_probabilities: np.ndarray,
                    labels: np.ndarray) -> Calibration:
    """Fit `method` on fresh labelled data: the teacher's probabilities against what users did."""
    p, y = np.ravel(teacher_probabilities), np.ravel(labels)
    calibration = Calibration(method=method, teacher_version=teacher_version, ece_before=ece(y, p))
    if method == "platt":
        fitted = LogisticRegression(C=1e4).fit(logit(p)[:, None], y)
        calibration.slope, calibration.intercept = float(fitted.coef_[0, 0]), float(fitted.intercept_[0])
    elif method == "isotonic":
        fitted = IsotonicRegression(y_min=PROBABILITY_EPS, y_max=1 - PROBABILITY_EPS, out_of_bounds="clip").fit(p, y)
        calibration.knots_x, calibration.knots_y = fitted.X_thresholds_.tolist(), fitted.y_thresholds_.tolist()
    calibration.ece_after = ece(y, calibration.transform(p))
    return calibration


def inverse_propensity_weights(sampling_probability: np.ndarray, max_weight: float = 100.0) -> np.ndarray:
    """1 / p, clipped, normalised to mean 1 so the loss scale does not depend on the sampling rate."""
    weights = 1.0 / np.clip(np.asarray(sampling_probability, dtype=np.float64), 1.0 / max_weight, 1.0)
    return (weights / weights.mean()).astype(np.float32)


def to_sampled_space(probability: np.ndarray, negative_keep_rate: float) -> np.ndarray:
    """A probability on the full traffic, as a model trained with negatives kept at `rate` predicts it."""
    p = np.asarray(probability, dtype=np.float64)
    odds = p / np.clip(1 - p, PROBABILITY_EPS, None)
    odds = odds / negative_keep_rate
    return (odds / (1 + odds)).astype(np.float32)
