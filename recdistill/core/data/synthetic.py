"""Seeded synthetic ranking requests with long histories, for speed and scale tests only.

Never use these for quality claims: the items and users are random draws from Zipf popularity.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def synthetic_requests(count: int, history_len: int, candidates: int, seed: int = 0,
                       num_items: int = 1_682, start_ts: int = 880_000_000) -> list[dict[str, Any]]:
    """`count` `/v1/rank` bodies, each with exactly `history_len` events and `candidates` candidates."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, num_items + 1) ** 1.1
    popularity /= popularity.sum()
    requests = []
    for index in range(count):
        items = rng.choice(num_items, size=history_len + candidates, p=popularity) + 1
        gaps = rng.exponential(3_600.0, size=history_len).astype(np.int64)
        ts = start_ts + np.cumsum(gaps)
        actions = rng.integers(1, 6, size=history_len)
        requests.append({
            "request_id": f"synthetic-{seed}-{index}",
            "user": {"user_id": int(rng.integers(1, 10_000))},
            "history": [
                {"item_id": int(i), "ts": int(t), "action": int(a)}
                for i, t, a in zip(items[:history_len], ts, actions, strict=True)
            ],
            "candidates": [{"item_id": int(i)} for i in items[history_len:]],
            "context": {"ts": int(ts[-1]) + 60 if history_len else start_ts},
        })
    return requests
