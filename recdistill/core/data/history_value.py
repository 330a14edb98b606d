"""What a user's history is worth on a dataset, measured before any model is trained: the pooled AUC on a
split's slates of the plainest history scorer, how often the history holds the candidate (ties broken by how
recently), reading the last N events. If the whole history scores no better than the last 10 events, no
teacher can show a long-history gain there and no student can be given one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.metrics import auc

WINDOWS: tuple[int | None, ...] = (10, 100, 1_000, None)  # None: the whole history


def counter_scores(history: Sequence[str], candidates: Sequence[str]) -> list[float]:
    """The repeat counter: how often `history` holds each candidate, then how recently (a fraction of one count,
    to break ties); 0 for a candidate it does not hold."""
    counts = Counter(history)
    last = {item: position for position, item in enumerate(history)}
    return [counts[c] + (last[c] + 1) / (len(history) + 1) if c in counts else 0.0 for c in candidates]


def repeat_counter_scores(dataset: PreparedDataset, event_ids: np.ndarray, width: int) -> np.ndarray:
    """The repeat counter over each request's whole history, as scores [events, width] of the slate candidates
    (the event's item, then its logged negatives; 0 past them): the first reference a practitioner tries."""
    timelines = dataset.timelines["item_ids"]
    events = dataset.events
    scores = np.zeros((len(event_ids), width), dtype=np.float32)
    users, lengths = events["user_id"].to_numpy(), events["hist_len"].to_numpy()
    items, negatives = events["item_id"].to_numpy(), events["slate_negatives"].to_numpy()
    for row, event in enumerate(event_ids):
        candidates = [items[event], *negatives[event]][:width]
        scores[row, : len(candidates)] = counter_scores(timelines.loc[users[event]][: lengths[event]], candidates)
    return scores


def history_value(dataset: PreparedDataset, split: str = "test", windows: tuple[int | None, ...] = WINDOWS
                  ) -> list[dict[str, Any]]:
    """One row per window: the history scorer's pooled AUC on `split`'s slates and the share of the split's
    real items the window holds at all."""
    events = dataset.events.iloc[dataset.split(split, "slate")]
    timelines = dataset.timelines["item_ids"]
    rows = []
    for window in windows:
        labels, scores, held = [], [], 0
        for event in events.itertuples():
            items = timelines.loc[event.user_id][:event.hist_len]
            recent = items if window is None else items[-window:]
            scores += counter_scores(recent, [event.item_id, *event.slate_negatives])
            labels += [1] + [0] * len(event.slate_negatives)
            held += event.item_id in set(recent)
        rows.append({"history_events": "all" if window is None else window,
                     "auc": round(float(auc(np.asarray(labels), np.asarray(scores))), 4),
                     "positives_in_window": round(held / len(events), 4)})
    return rows
