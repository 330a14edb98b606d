from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.prepare import prepare
from recdistill.core.data.userlog import load_user_log
from recdistill.core.errors import DataError

pytestmark = pytest.mark.unit


def test_movielens_counts(ml100k: PreparedDataset) -> None:
    stats = ml100k.manifest["stats"]
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100_000)
    assert 0.5 < stats["positive_rate"] < 0.6
    assert sum(ml100k.manifest["split"]["counts"].values()) == 100_000


def test_split_is_by_global_time(ml100k: PreparedDataset) -> None:
    events, split = ml100k.events, ml100k.manifest["split"]
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


def test_slate_negatives_are_never_rated_distinct_and_seeded(ml100k: PreparedDataset, tmp_path: Path) -> None:
    events = ml100k.events
    rated = events.groupby("user_id")["item_id"].agg(set)
    for row in events.sample(2_000, random_state=0).itertuples():
        negatives = list(row.slate_negatives)
        assert len(negatives) == ml100k.manifest["slate_negatives"] == len(set(negatives))
        assert not set(negatives) & rated[row.user_id]
    labels = ml100k.labels([0, 1], "slate")
    assert labels.shape == (2, 21)
    assert labels[:, 0].tolist() == [1.0, 1.0]
    assert labels[:, 1:].sum() == 0


def _toy_log(path: Path, kind: str) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "user_id": rng.integers(1, 30, 600),
        "item_id": [f"item-{i}" for i in rng.integers(1, 80, 600)],
        "timestamp": 1_700_000_000 + rng.integers(0, 1_000_000, 600),
        "label": rng.integers(0, 2, 600),
        "gender": rng.choice(["F", "M"], 600),
        "genres": rng.choice(["Drama|Comedy", "Action"], 600),
    })
    target = path / f"log.{kind}"
    frame.to_csv(target, index=False) if kind == "csv" else frame.to_parquet(target)
    return target


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_user_log_is_prepared_like_movielens(tmp_path: Path, kind: str) -> None:
    log = load_user_log(kind, _toy_log(tmp_path, kind))
    manifest = prepare(log, tmp_path / "prepared")
    dataset = PreparedDataset(tmp_path / "prepared")
    assert manifest["stats"]["interactions"] == 600
    assert dataset.schema.genre_vocab == ["Action", "Comedy", "Drama"]
    assert set(dataset.schema.action_vocab) <= {"0", "1"}


def test_user_log_without_required_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame({"user_id": [1], "item_id": [2], "label": [1]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="timestamp"):
        load_user_log("csv", path)


def test_user_log_with_bad_labels_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame({"user_id": [1], "item_id": [2], "timestamp": [3], "label": [4]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="label"):
        load_user_log("csv", path)
