"""Seeded synthetic ranking requests shaped by a feature schema, with histories of any length, for
staging probes, speed and scale tests, benchmarks and load tests only.

Never use these for quality claims: items, users and feature values are random draws (items with a
Zipf popularity over the schema's catalogue, feature values from the fitted vocabularies and ranges).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from recdistill.core.features.schema import FeatureSchema, FittedFeature


def _value(feature: FittedFeature, rng: np.random.Generator) -> Any:
    if feature.kind == "categorical":
        return str(feature.vocab[int(rng.integers(len(feature.vocab)))]) if feature.vocab else None
    if feature.kind == "hashed":
        return f"{feature.name}-{int(rng.integers(1_000_000))}"
    if feature.kind == "multi_categorical":
        if not feature.vocab:
            return None
        picks = rng.choice(len(feature.vocab), size=min(len(feature.vocab), int(rng.integers(1, 4))), replace=False)
        return [feature.vocab[int(i)] for i in picks]
    if feature.kind == "bucketized":
        low, high = feature.boundaries[0], feature.boundaries[-1]
        span = max(high - low, 1.0)
        return round(float(rng.uniform(low - span / 4, high + span / 4)), 2)
    number = feature.mean + feature.std * float(rng.normal())
    return round(math.expm1(number) if feature.log else number, 3)


def synthetic_requests(schema: FeatureSchema, count: int, history_len: int, candidates: int, seed: int = 0,
                       start_ts: int = 880_000_000) -> list[dict[str, Any]]:
    """`count` `/v1/rank` bodies for `schema`, each with exactly `history_len` events and `candidates`
    candidates, every declared user and context column filled."""
    rng = np.random.default_rng(seed)
    catalogue = list(dict.fromkeys([*schema.item_vocab, *schema.item_table])) or [str(i) for i in range(1, 1_001)]
    popularity = 1.0 / np.arange(1, len(catalogue) + 1) ** 1.1
    popularity /= popularity.sum()
    spec = schema.spec_model
    per_second = spec.source.units_per_second  # request times in the schema's unit
    with_action = bool(spec.source.action and spec.sequence.action and schema.action_vocab)
    requests = []
    for index in range(count):
        items = rng.choice(len(catalogue), size=history_len + candidates, p=popularity)
        ts = start_ts + np.cumsum(rng.exponential(3_600.0, size=history_len).astype(np.int64))
        history = []
        for position in range(history_len):
            event: dict[str, Any] = {"item_id": catalogue[items[position]], "ts": int(ts[position]) * per_second}
            if with_action:
                action = schema.action_vocab[int(rng.integers(len(schema.action_vocab)))]
                event["action"] = int(action) if action.isdigit() else action
            if spec.sequence.value:
                event["value"] = round(float(rng.exponential(30.0)), 2)
            history.append(event)
        user: dict[str, Any] = {"user_id": f"synthetic-user-{int(rng.integers(1, 10_000))}"}
        context: dict[str, Any] = {"ts": (int(ts[-1]) + 60 if history_len else start_ts) * per_second}
        for feature in schema.features:
            if feature.entity == "item":
                continue
            target = user if feature.entity == "user" else context
            if feature.column not in target:
                value = _value(feature, rng)
                if value is not None:
                    target[feature.column] = value
        requests.append({
            "request_id": f"synthetic-{seed}-{index}",
            "user": user,
            "history": history,
            "candidates": [{"item_id": catalogue[i]} for i in items[history_len:]],
            "context": context,
        })
    return requests


def probe_request(schema: FeatureSchema, candidates: int, history_len: int = 20) -> dict[str, Any]:
    """A ranking request with `candidates` candidates and a `history_len`-event history, for staging probes."""
    (body,) = synthetic_requests(schema, 1, history_len=history_len, candidates=candidates, seed=7)
    return body | {"request_id": "probe"}
