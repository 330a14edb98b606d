"""The replay's logging policy: a bias the student cannot see, so that debiasing has something to undo.

Each replayed request gets a traffic source from a hidden variable, the user's intent: a user after a
niche movie (the item they really watch next is in the less popular half of the training window's
counts) arrives from "search", the others from "home". No model reads the source, and nothing in a
request names the next item. The server samples "search" traffic at a lower rate
(`DemoConfig.search_sampling_rate`), so the sample log over-represents users after popular items; only the
recorded sampling probability (inverse-propensity weights) can restore the traffic's mix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recdistill.core.data.dataset import PreparedDataset

MAINSTREAM, NICHE = "home", "search"


def target_popularity(dataset: PreparedDataset, event_ids: Sequence[int]) -> np.ndarray:
    """Per event: how often its item was rated in the training window."""
    events = dataset.events
    counts = events.iloc[dataset.split("train")]["item_id"].astype(str).value_counts()
    targets = events.iloc[np.asarray(event_ids, dtype=np.int64)]["item_id"].astype(str)
    return counts.reindex(targets).fillna(0).to_numpy()


def traffic_sources(dataset: PreparedDataset, event_ids: Sequence[int]) -> dict[int, str]:
    """Event id -> traffic source: "search" for the events whose item is at or under the median popularity."""
    popularity = target_popularity(dataset, event_ids)
    median = float(np.median(popularity)) if popularity.size else 0.0
    return {int(e): MAINSTREAM if p > median else NICHE for e, p in zip(event_ids, popularity, strict=True)}
