"""Evaluate scores of one model on a split: the figures every report and manifest carries."""

from __future__ import annotations

import numpy as np

from recdistill.core import metrics


def evaluate(task: str, labels: np.ndarray, scores: np.ndarray, mask: np.ndarray,
             user_ids: np.ndarray) -> dict[str, float]:
    """labels, scores, mask: [events, candidates]; user_ids: [events]. Scores are probabilities."""
    # Users as integer codes in the ids' sorted order (GAUC adds its groups up in that order): sorting ints, not
    # the object array of ids a split holds, once per candidate.
    codes = np.unique(np.asarray(user_ids), return_inverse=True)[1].reshape(-1)
    users = np.broadcast_to(codes[:, None], labels.shape)
    flat_labels, flat_scores, flat_users = labels[mask], scores[mask], users[mask]
    result = {
        "auc": metrics.auc(flat_labels, flat_scores),
        "gauc": metrics.gauc(flat_labels, flat_scores, flat_users),
        "log_loss": metrics.log_loss(flat_labels, flat_scores),
        "ece": metrics.ece(flat_labels, flat_scores),
        "events": int(labels.shape[0]),
    }
    if task == "slate":
        result["ndcg@10"] = metrics.ndcg_at_k(np.where(mask, labels, 0.0), np.where(mask, scores, -np.inf), 10)
    return {name: round(value, 6) if isinstance(value, float) else value for name, value in result.items()}
