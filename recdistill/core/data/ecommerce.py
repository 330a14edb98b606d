"""A seeded generator of a realistic e-commerce impression log, shaped unlike MovieLens: for tests and
for running the whole loop on a second schema (`recdistill/schemas/ecommerce.toml`), never for
quality claims about real traffic.

What it models:
- users with a Zipf activity (a few users with long histories), a segment and an age; sessions of
  10-40 impressions on a device (mobile / desktop / tablet) at an hour of day;
- a catalogue of SKUs (opaque high-cardinality ids, hashed by the schema) in categories and brands,
  with a log-normal price per category and a Zipf popularity, including items never shown;
- each session has an intent category; shown items come from the intent, the user's long-term
  favourite category or the popular head, in slates of 10 with the position logged;
- clicks depend on the intent, on a long-term favourite category the user reveals only across many
  sessions (a signal a 10-event window rarely holds and a long-history teacher can learn), on price,
  device, popularity, and on the position (position bias: 1 / log2(position + 2)).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from recdistill.core.data.log import RawLog

DEVICES = ("mobile", "desktop", "tablet")
SEGMENTS = ("new", "returning", "loyal")


def generate_ecommerce(events: int = 60_000, users: int = 2_500, items: int = 6_000, categories: int = 30,
                       brands: int = 250, seed: int = 0, start_ts: int = 1_700_000_000) -> RawLog:
    rng = np.random.default_rng(seed)
    # The catalogue.
    item_category = rng.integers(categories, size=items)
    item_brand = (item_category * (brands // categories) + rng.integers(brands // categories, size=items)) % brands
    category_price = np.exp(rng.normal(3.5, 0.8, size=categories))
    price = np.round(category_price[item_category] * np.exp(rng.normal(0.0, 0.35, size=items)), 2)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.9
    popularity = popularity[rng.permutation(items)]
    popularity /= popularity.sum()
    skus = np.array([f"sku-{hashlib.blake2b(f'{seed}-{i}'.encode(), digest_size=6).hexdigest()}"
                     for i in range(items)])
    by_category = [np.flatnonzero(item_category == c) for c in range(categories)]
    category_weights = [popularity[members] / popularity[members].sum() for members in by_category]
    # The users.
    activity = 1.0 / np.arange(1, users + 1) ** 1.05
    activity /= activity.sum()
    favourite = rng.integers(categories, size=users)
    price_taste = rng.normal(0.0, 0.5, size=users)
    segment = rng.choice(len(SEGMENTS), size=users, p=(0.5, 0.35, 0.15))
    age = np.clip(np.round(rng.normal(36, 11, size=users)), 16, 80)
    device_of = rng.choice(len(DEVICES), size=users, p=(0.6, 0.3, 0.1))
    clock = start_ts + rng.uniform(0, 86_400 * 3, size=users)

    rows: list[tuple] = []
    while len(rows) < events:
        user = int(rng.choice(users, p=activity))
        clock[user] += rng.exponential(86_400 * 2)
        ts = clock[user]
        device = device_of[user] if rng.random() < 0.8 else int(rng.integers(len(DEVICES)))
        intent = int(rng.integers(categories)) if rng.random() < 0.7 else int(favourite[user])
        for _ in range(int(rng.integers(1, 4))):  # slates of 10 in this session
            source = rng.random(10)
            loved = int(favourite[user])
            shown = np.where(source < 0.5, rng.choice(by_category[intent], size=10, p=category_weights[intent]),
                             np.where(source < 0.6, rng.choice(by_category[loved], size=10, p=category_weights[loved]),
                                      rng.choice(items, size=10, p=popularity)))
            for position, item in enumerate(shown):
                ts += rng.exponential(20.0)
                category = item_category[item]
                logit = (-2.2 + 1.0 * (category == intent) + 1.6 * (category == favourite[user])
                         - 0.6 * (np.log(price[item]) - 3.5) * (1.0 + price_taste[user])
                         + 0.3 * (device == 1) + 0.15 * segment[user]
                         + 40.0 * popularity[item])
                p_click = 1.0 / (1.0 + np.exp(-logit)) / np.log2(position + 2)
                clicked = int(rng.random() < p_click)
                dwell = round(float(rng.exponential(45.0)), 1) if clicked else 0.0
                hour = int((ts % 86_400) // 3_600)
                rows.append((f"user-{user}", skus[item], int(ts), clicked, "click" if clicked else "skip", dwell,
                             position, DEVICES[device], hour, SEGMENTS[segment[user]], float(age[user])))
        clock[user] = ts
    frame = pd.DataFrame(rows[:events], columns=["visitor", "sku", "ts", "clicked", "event_type", "dwell_s",
                                                 "position", "device", "hour", "segment", "age"])
    catalogue = pd.DataFrame({"sku": skus, "category": [f"cat-{c}" for c in item_category],
                              "brand": [f"brand-{b}" for b in item_brand], "price": price})
    digest = hashlib.sha256(f"ecommerce-{events}-{users}-{items}-{categories}-{brands}-{seed}".encode()).hexdigest()
    return RawLog(name=f"ecommerce-{events}", events=frame, items=catalogue, source_sha256=digest)
