"""Read a prepared dataset and turn its events into encoder contexts, labels and ranking requests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from recdistill.core.errors import DataError
from recdistill.core.features.encoder import Encoder, MappedContext
from recdistill.core.features.schema import FeatureSchema

Task = Literal["ctr", "slate"]
TASKS: tuple[Task, ...] = ("ctr", "slate")


@dataclass
class _MappedTimeline:
    items: np.ndarray
    actions: np.ndarray
    timestamps: np.ndarray


class PreparedDataset:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        manifest_path = self.directory / "manifest.json"
        if not manifest_path.exists():
            raise DataError(f"{self.directory} is not a prepared dataset (no manifest.json); "
                            "run `recdistill data prepare` first")
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        self.schema = FeatureSchema.load(self.directory / "features.json")
        self.events = pd.read_parquet(self.directory / "events.parquet")
        self._mapped: dict[str, dict[str, _MappedTimeline]] = {}

    @cached_property
    def timelines(self) -> pd.DataFrame:
        return pd.read_parquet(self.directory / "timelines.parquet").set_index("user_id")

    @cached_property
    def users(self) -> pd.DataFrame:
        return pd.read_parquet(self.directory / "users.parquet").set_index("user_id")

    def split(self, name: str) -> np.ndarray:
        ids = np.flatnonzero(self.events["split"].to_numpy() == name)
        if ids.size == 0:
            raise DataError(f"split '{name}' is empty in {self.directory}")
        return ids

    def _user_row(self, user_id: str) -> tuple[float | None, str | None, str | None, str | None]:
        row = self.users.loc[user_id]
        age = None if pd.isna(row["age"]) else float(row["age"])
        return age, row["gender"] or None, row["occupation"] or None, row["zip_code"] or None

    def _mapped_timelines(self, encoder: Encoder) -> dict[str, _MappedTimeline]:
        key = f"{encoder.schema.hash}"
        if key not in self._mapped:
            self._mapped[key] = {
                user: _MappedTimeline(
                    items=encoder.map_items(list(row.item_ids)),
                    actions=encoder.map_actions(list(row.actions)),
                    timestamps=np.asarray(row.timestamps, dtype=np.float64),
                )
                for user, row in self.timelines.iterrows()
            }
        return self._mapped[key]

    def candidates(self, event_id: int, task: Task, negatives: int | None = None) -> list[str]:
        """The event's item first, then never-rated items: all logged ones (slate, `negatives=None`) or the
        first `negatives`. For ctr, `negatives=None` means none: the impression alone."""
        row = self.events.iloc[event_id]
        if task == "ctr" and not negatives:
            return [row["item_id"]]
        negs = list(row["slate_negatives"])
        return [row["item_id"], *(negs if negatives is None else negs[:negatives])]

    def labels(self, event_ids: Sequence[int], task: Task, negatives: int | None = None) -> np.ndarray:
        """Labels [B, C]: the impression label (ctr) or 1 for the real item (slate), then 0s for the
        never-rated items (for ctr these have no observed label: the trainer masks them)."""
        ids = np.asarray(event_ids)
        if task == "ctr":
            labels = np.zeros((len(ids), 1 + (negatives or 0)), dtype=np.float32)
            labels[:, 0] = self.events["label"].to_numpy()[ids]
            return labels
        width = 1 + (self.manifest["slate_negatives"] if negatives is None else negatives)
        labels = np.zeros((len(ids), width), dtype=np.float32)
        labels[:, 0] = 1.0
        return labels

    def contexts(self, encoder: Encoder, event_ids: Sequence[int], task: Task,
                 negatives: int | None = None) -> list[MappedContext]:
        timelines = self._mapped_timelines(encoder)
        events = self.events
        user_ids = events["user_id"].to_numpy()
        hist_lens = events["hist_len"].to_numpy()
        timestamps = events["timestamp"].to_numpy()
        out = []
        for event_id in event_ids:
            user = user_ids[event_id]
            timeline = timelines[user]
            end = int(hist_lens[event_id])
            start = max(0, end - encoder.history_len)
            cand_item, cand_genres, cand_year = encoder.map_candidates(self.candidates(event_id, task, negatives))
            out.append(MappedContext(
                user_cat=encoder.map_user(user, *self._user_row(user)),
                hist_item=timeline.items[start:end],
                hist_action=timeline.actions[start:end],
                hist_ts=timeline.timestamps[start:end],
                history_length=end,
                request_ts=float(timestamps[event_id]),
                cand_item=cand_item,
                cand_genres=cand_genres,
                cand_year=cand_year,
            ))
        return out

    def to_request(self, event_id: int, task: Task, negatives: int | None = None) -> dict[str, Any]:
        """The `/v1/rank` JSON body that a serving frontend would have seen for this event."""
        row = self.events.iloc[event_id]
        user = row["user_id"]
        timeline = self.timelines.loc[user]
        end = int(row["hist_len"])
        age, gender, occupation, zip_code = self._user_row(user)
        user_body: dict[str, Any] = {"user_id": user}
        for name, value in (("age", age), ("gender", gender), ("occupation", occupation), ("zip_code", zip_code)):
            if value is not None:
                user_body[name] = int(value) if name == "age" else value
        history = [
            {"item_id": item, "ts": int(ts), "action": int(action) if action.isdigit() else action}
            for item, action, ts in zip(timeline.item_ids[:end], timeline.actions[:end],
                                        timeline.timestamps[:end], strict=True)
        ]
        return {
            "request_id": f"event-{event_id}",
            "user": user_body,
            "history": history,
            "candidates": [{"item_id": item} for item in self.candidates(event_id, task, negatives)],
            "context": {"ts": int(row["timestamp"])},
        }
