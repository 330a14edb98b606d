"""Read a prepared dataset and turn its events into encoder contexts, labels and ranking requests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recdistill.core.contracts.dataset import DatasetManifest, Task
from recdistill.core.data.dense import DenseCandidates
from recdistill.core.errors import DataError
from recdistill.core.features.encoder import Encoder, MappedContext
from recdistill.core.features.schema import FeatureSchema, is_missing

TASKS: tuple[Task, ...] = ("ctr", "slate")


@dataclass
class _MappedTimeline:
    items: np.ndarray
    actions: np.ndarray
    values: np.ndarray
    timestamps: np.ndarray


def _json_value(value: object) -> Any:
    """A raw cell as a request carries it: missing -> None, whole floats as integers, arrays as lists."""
    if isinstance(value, list | tuple | np.ndarray):
        return [str(v) for v in value]
    if is_missing(value):
        return None
    if isinstance(value, float | np.floating):
        return int(value) if float(value).is_integer() else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def spread(negatives: list[str], n: int) -> list[str]:
    """`n` of a slate's logged negatives, spread evenly over it (a slate lists its own-history negatives first,
    then the never-interacted ones), in an order whose every prefix is spread too: the first k of them, as the
    hard-label ones of a training example, are a mix of both kinds, as the evaluated slates are."""
    if n >= len(negatives):
        return negatives
    picks = [(i * len(negatives)) // n for i in range(n)]
    order: list[int] = []
    step = 1 << max(0, n - 1).bit_length()
    while step:  # a bit-reversal order of the picks: halves, then quarters, ...
        order += [i for i in range(0, n, step) if i not in order]
        step //= 2
    return [negatives[picks[i]] for i in order]


class PreparedDataset:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        manifest_path = self.directory / "manifest.json"
        if not manifest_path.exists():
            raise DataError(f"{self.directory} is not a prepared dataset (no manifest.json); "
                            "run `recdistill data prepare` first")
        self.manifest = DatasetManifest.read(manifest_path)
        self.schema = FeatureSchema.load(self.directory / "features.json")
        self.events = pd.read_parquet(self.directory / "events.parquet")
        self._mapped: dict[str, dict[str, _MappedTimeline]] = {}

    @cached_property
    def timelines(self) -> pd.DataFrame:
        return pd.read_parquet(self.directory / "timelines.parquet").set_index("user_id")

    @cached_property
    def users(self) -> dict[str, dict[str, Any]]:
        """Raw user feature columns by user id."""
        frame = pd.read_parquet(self.directory / "users.parquet").set_index("user_id")
        return frame.to_dict("index")

    @cached_property
    def _context_columns(self) -> list[str]:
        return list(self.schema.spec_model.request_columns["context"])

    def split(self, name: str, task: Task | None = None) -> np.ndarray:
        """Event ids of a split; for the slate task only its positives (every event of a rating log, the
        clicked impressions of an impression log)."""
        selected = self.events["split"].to_numpy() == name
        if task == "slate":
            selected &= self.events["slate_event"].to_numpy()
        ids = np.flatnonzero(selected)
        if ids.size == 0:
            raise DataError(f"split '{name}' is empty in {self.directory}")
        return ids

    def mapped_timelines(self, encoder: Encoder) -> dict[str, _MappedTimeline]:
        key = f"{encoder.schema.hash}"
        if key not in self._mapped:
            self._mapped[key] = {
                user: _MappedTimeline(
                    items=encoder.map_items(list(row.item_ids)),
                    actions=encoder.map_actions(list(row.actions)),
                    values=encoder.map_values(list(row["values"])),
                    timestamps=np.asarray(row.timestamps, dtype=np.float64),
                )
                for user, row in self.timelines.iterrows()
            }
        return self._mapped[key]

    def candidates(self, event_id: int, task: Task, negatives: int | None = None,
                   dense: DenseCandidates | None = None) -> list[str]:
        """The event's item first, then items the user had not interacted with before it: all logged ones
        (slate, `negatives=None`) or the first `negatives`. For ctr, `negatives=None` means none. With
        `dense`, the dense candidates follow (a teacher label only)."""
        row = self.events.iloc[event_id]
        extra = self._dense(row, event_id, dense) if dense is not None and dense.size else []
        if task == "ctr" and not negatives:
            return [row["item_id"], *extra]
        negs = list(row["slate_negatives"])
        return [row["item_id"], *(negs if negatives is None else spread(negs, negatives)), *extra]

    @cached_property
    def popular_items(self) -> list[str]:
        """Items by training-window count, most bought first."""
        train = self.events.loc[self.events["split"] == "train", "item_id"]
        return [str(item) for item in train.value_counts().index]

    def dense_candidates(self, event_id: int, dense: DenseCandidates) -> list[str]:
        """The dense candidates of an event, from what its request holds: its user's earlier items and the
        popular ones (never its own item or label: the real item is as likely as any earlier one)."""
        return self._dense(self.events.iloc[event_id], event_id, dense)

    def _dense(self, row: pd.Series, event_id: int, dense: DenseCandidates) -> list[str]:
        history = self.timelines.loc[row["user_id"]].item_ids[: int(row["hist_len"])]
        return dense.choose([str(item) for item in history], self.popular_items, seed=int(event_id))

    def recent_per_user(self, event_ids: np.ndarray, per_user: int) -> np.ndarray:
        """Of `event_ids` (in time order), each user's `per_user` most recent: the student's training window
        counted as events per user (how much recent traffic a serving student retrains on)."""
        users = self.events["user_id"].to_numpy()[event_ids]
        order = pd.Series(np.arange(len(event_ids))).groupby(users).cumcount(ascending=False).to_numpy()
        return event_ids[order < per_user]

    def labels(self, event_ids: Sequence[int], task: Task, negatives: int | None = None,
               dense: DenseCandidates | None = None) -> np.ndarray:
        """Labels [B, C]: the impression label (ctr) or 1 for the real item (slate), then 0s for the
        sampled negatives (for ctr these have no observed label: the trainer masks them)."""
        ids = np.asarray(event_ids)
        extra = dense.size if dense is not None else 0
        if task == "ctr":
            labels = np.zeros((len(ids), 1 + (negatives or 0) + extra), dtype=np.float32)
            labels[:, 0] = self.events["label"].to_numpy()[ids]
            return labels
        width = 1 + (self.manifest.slate_negatives if negatives is None else negatives) + extra
        labels = np.zeros((len(ids), width), dtype=np.float32)
        labels[:, 0] = 1.0
        return labels

    def contexts(self, encoder: Encoder, event_ids: Sequence[int], task: Task,
                 negatives: int | None = None, dense: DenseCandidates | None = None) -> list[MappedContext]:
        timelines = self.mapped_timelines(encoder)
        events = self.events
        user_ids = events["user_id"].to_numpy()
        hist_lens = events["hist_len"].to_numpy()
        timestamps = events["timestamp"].to_numpy()
        context_columns = {c: events[c].to_numpy() for c in self._context_columns}
        out = []
        for event_id in event_ids:
            user = user_ids[event_id]
            timeline = timelines[user]
            end = int(hist_lens[event_id])
            start = max(0, end - encoder.history_len)
            cand_item, cand_cat, cand_multi, cand_num = encoder.map_candidates(
                self.candidates(event_id, task, negatives, dense))
            user_cat, user_num = encoder.map_profile(
                self.users.get(user, {}), {c: values[event_id] for c, values in context_columns.items()})
            out.append(MappedContext(
                user_cat=user_cat, user_num=user_num,
                hist_item=timeline.items[start:end],
                hist_action=timeline.actions[start:end],
                hist_value=timeline.values[start:end],
                hist_ts=timeline.timestamps[start:end],
                history_length=end,
                request_ts=float(timestamps[event_id]),
                cand_item=cand_item, cand_cat=cand_cat, cand_multi=cand_multi, cand_num=cand_num,
                user_hash=encoder.user_bucket(user),
            ))
        return out

    def to_request(self, event_id: int, task: Task, negatives: int | None = None) -> dict[str, Any]:
        """The `/v1/rank` JSON body that a serving frontend would have seen for this event."""
        row = self.events.iloc[event_id]
        user = row["user_id"]
        timeline = self.timelines.loc[user]
        end = int(row["hist_len"])
        columns = self.schema.spec_model.request_columns
        raw_user = self.users.get(user, {})
        user_body: dict[str, Any] = {"user_id": user}
        for column in columns["user"]:
            value = _json_value(raw_user.get(column))
            if value is not None and value != []:
                user_body[column] = value
        spec = self.schema.spec_model
        with_action, with_value = bool(spec.source.action and spec.sequence.action), spec.sequence.value
        per_second = spec.source.units_per_second  # requests carry times in the log's own unit

        def unix(seconds: float) -> int:
            return round(seconds * per_second)

        history = []
        for item, action, value, ts in zip(timeline.item_ids[:end], timeline.actions[:end], timeline["values"][:end],
                                           timeline.timestamps[:end], strict=True):
            event: dict[str, Any] = {"item_id": item, "ts": unix(ts)}
            if with_action and action:
                event["action"] = int(action) if action.isdigit() else action
            if with_value and not is_missing(value):
                event["value"] = _json_value(value)
            history.append(event)
        context: dict[str, Any] = {"ts": unix(row["timestamp"])}
        for column in columns["context"]:
            value = _json_value(row[column])
            if value is not None and value != []:
                context[column] = value
        return {
            "request_id": f"event-{event_id}",
            "user": user_body,
            "history": history,
            "candidates": [{"item_id": item} for item in self.candidates(event_id, task, negatives)],
            "context": context,
        }
