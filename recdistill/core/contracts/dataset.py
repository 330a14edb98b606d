"""A prepared dataset's `manifest.json` (written last by `recdistill data prepare`: it marks the directory
complete): what the data is, how it was split and how the slates' negatives were drawn.

It carries `format`; a reader that meets another format stops with an error naming it. Unknown extra fields
are ignored, so adding an optional field is a compatible change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec
from msgspec import Struct

from recdistill.core.contracts.versioned import decode_versioned

DATASET_FORMAT = 1
Task = Literal["slate", "ctr"]  # a ranked slate of candidates (the serving scenario), or one impression


class DatasetStats(Struct, frozen=True, kw_only=True):
    users: int
    items: int
    catalogue_items: int
    interactions: int
    positive_rate: float
    history_length_percentiles: dict[str, int]  # p50, p90, p99, max: events before each one


class DatasetSplit(Struct, frozen=True, kw_only=True):
    """By time: train before `valid_start_ts`, valid before `test_start_ts`, test the rest."""

    valid_start_ts: int
    test_start_ts: int
    fractions: list[float]
    counts: dict[str, int]
    rule: str


class DatasetManifest(Struct, frozen=True, kw_only=True):
    dataset: str
    schema: str  # the schema file's name
    source_sha256: str | None
    created_unix: int
    schema_hash: str
    stats: DatasetStats
    split: DatasetSplit
    tasks: dict[str, str]  # task -> what an example of it is
    seed: int
    slate_negatives: int
    # Negatives are drawn from items not interacted with *before* each event: this share of them is interacted
    # with later (a "never interacted" rule would have excluded them, knowing the future).
    slate_negatives_interacted_later_share: float
    # Where the negatives came from: the user's own earlier items outside the event's session, or items not
    # interacted with before (on repeat-purchase data the first kind keeps "bought before" honest).
    slate_negative_sources: dict[str, float]
    files: list[str]
    seconds: float
    format: int = DATASET_FORMAT

    @classmethod
    def read(cls, path: Path) -> DatasetManifest:
        """`DataError` naming the file for an unknown format or a manifest that does not parse."""
        return decode_versioned(path.read_bytes(), cls, DATASET_FORMAT, f"{path}: dataset manifest",
                                "prepare the dataset again")

    def to_json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2)
