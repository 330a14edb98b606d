from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest

from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.prepare import prepare, prepare_source
from recdistill.core.data.userlog import load_user_log
from recdistill.core.features.encoder import Encoder
from recdistill.core.features.spec import parse_schema_spec

pytestmark = pytest.mark.unit


def test_movielens_counts(ml100k: PreparedDataset) -> None:
    stats = msgspec.to_builtins(ml100k.manifest.stats)
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100_000)
    assert 0.5 < stats["positive_rate"] < 0.6
    assert sum(ml100k.manifest.split.counts.values()) == 100_000


def test_split_is_by_global_time(ml100k: PreparedDataset) -> None:
    events, split = ml100k.events, msgspec.to_builtins(ml100k.manifest.split)
    by_split = {name: events.loc[events["split"] == name, "timestamp"] for name in ("train", "valid", "test")}
    assert by_split["train"].max() < split["valid_start_ts"] <= by_split["valid"].min()
    assert by_split["valid"].max() < split["test_start_ts"] <= by_split["test"].min()
    counts = split["counts"]
    assert counts["train"] == pytest.approx(80_000, rel=0.02)
    assert np.all(np.diff(events["timestamp"].to_numpy()) >= 0)


def test_every_history_is_strictly_before_its_event(ml100k: PreparedDataset) -> None:
    events = ml100k.events
    for row in events.itertuples():
        timeline = ml100k.timelines.loc[row.user_id]
        history_ts = np.asarray(timeline.timestamps[: row.hist_len])
        history_items = list(timeline.item_ids[: row.hist_len])
        assert np.all(history_ts < row.timestamp), row.event_id
        assert row.item_id not in history_items, row.event_id
        # Nothing strictly earlier was left out either.
        assert int(np.sum(np.asarray(timeline.timestamps) < row.timestamp)) == row.hist_len


def test_slate_negatives_are_items_not_yet_interacted_with(ml100k: PreparedDataset) -> None:
    """Negatives come from items the user had not interacted with *before* the event (never its own item):
    an item the user rates later may be a negative, so a negative never knows the future."""
    events = ml100k.events
    timelines = ml100k.timelines
    later = 0
    for row in events.sample(2_000, random_state=0).itertuples():
        negatives = list(row.slate_negatives)
        assert len(negatives) == ml100k.manifest.slate_negatives == len(set(negatives))
        timeline = list(timelines.loc[row.user_id].item_ids)
        assert not set(negatives) & set(timeline[: row.hist_len])
        assert row.item_id not in negatives
        later += len(set(negatives) & set(timeline[row.hist_len:]))
    assert later > 0, "items rated only later are eligible negatives"
    assert 0 < ml100k.manifest.slate_negatives_interacted_later_share < 0.5
    labels = ml100k.labels([0, 1], "slate")
    assert labels.shape == (2, 21)
    assert labels[:, 0].tolist() == [1.0, 1.0]
    assert labels[:, 1:].sum() == 0


def test_impression_log_slates_start_from_clicks(ecommerce: PreparedDataset) -> None:
    events = ecommerce.events
    positives = ecommerce.split("train", "slate")
    assert (events["label"].to_numpy()[positives] == 1).all()
    assert len(positives) == int(((events["split"] == "train") & (events["label"] == 1)).sum())
    assert all(len(n) == 20 for n in events["slate_negatives"].to_numpy()[positives])
    assert len(ecommerce.split("train")) > len(positives), "ctr keeps every impression"


TOY_SCHEMA = """
name = "toy"
[source]
user_id = "visitor"
item_id = "product"
timestamp = "when"
label = "outcome in ['buy', 'cart']"
action = "outcome"
[[user_features]]
name = "gender"
kind = "categorical"
[[item_features]]
name = "genres"
kind = "multi_categorical"
[[item_features]]
name = "price"
kind = "numeric"
log = true
[tasks.slate]
negatives = 5
[views.teacher]
history_len = 100
[views.student]
history_len = 5
"""


def _toy_log(path: Path, kind: str) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "visitor": rng.integers(1, 30, 600),
        "product": [f"item-{i}" for i in rng.integers(1, 80, 600)],
        "when": 1_700_000_000 + rng.integers(0, 1_000_000, 600),
        "outcome": rng.choice(["view", "cart", "buy"], 600),
        "gender": rng.choice(["F", "M"], 600),
        "genres": rng.choice(["Drama|Comedy", "Action"], 600),
        "price": rng.uniform(1, 100, 600).round(2),
    })
    target = path / f"log.{kind}"
    if kind == "csv":
        frame.to_csv(target, index=False)
    elif kind == "jsonl":
        frame.to_json(target, orient="records", lines=True)
    else:
        frame.to_parquet(target)
    return target


@pytest.mark.parametrize("kind", ["csv", "parquet", "jsonl"])
def test_own_log_is_prepared_as_its_schema_declares(tmp_path: Path, kind: str) -> None:
    spec = parse_schema_spec(TOY_SCHEMA)
    manifest = prepare(load_user_log(kind, _toy_log(tmp_path, kind)), spec, tmp_path / "prepared")
    dataset = PreparedDataset(tmp_path / "prepared")
    assert manifest.stats.interactions == 600
    assert dataset.schema.feature("genres").vocab == ["Action", "Comedy", "Drama"]
    assert dataset.schema.action_vocab == ["buy", "cart", "view"]
    outcome = pd.read_json(_toy_log(tmp_path, "jsonl"), lines=True)["outcome"]
    assert manifest.stats.positive_rate == pytest.approx(outcome.isin(["buy", "cart"]).mean(), abs=1e-4)
    body = dataset.to_request(int(dataset.split("test")[0]), "slate")
    assert set(body["user"]) <= {"user_id", "gender"}
    assert dataset.schema.parse_request(body).user.user_id == body["user"]["user_id"]


def test_a_catalogue_gives_features_to_items_the_log_never_shows(tmp_path: Path) -> None:
    log = _toy_log(tmp_path, "parquet")
    catalogue = tmp_path / "catalogue.csv"
    pd.DataFrame({"product": ["item-1", "never-shown"], "genres": ["Action|Drama", "Comedy"],
                  "price": [10.0, 99.0]}).to_csv(catalogue, index=False)
    schema = tmp_path / "toy.toml"
    schema.write_text(TOY_SCHEMA)
    prepare_source(f"parquet:{log}", schema, tmp_path / "prepared", catalogue=f"csv:{catalogue}")
    dataset = PreparedDataset(tmp_path / "prepared")
    assert dataset.schema.item_table["never-shown"] == {"genres": ["Comedy"], "price": 99.0}
    assert dataset.schema.item_table["item-1"]["price"] == 10.0, "the catalogue wins over the event rows"
    encoder = Encoder(dataset.schema, "teacher")
    _, _, multi, numbers = encoder.map_candidates(["never-shown", "unknown"])
    assert multi[0].sum() == 1.0
    assert numbers[0, 0] == pytest.approx(encoder.number(dataset.schema.feature("price"), 99.0))
    assert multi[1].sum() == 0.0
