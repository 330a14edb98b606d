"""An interaction log as its source gives it, before a schema file says what its columns mean.

`events` has one row per impression or interaction with the source's own column names; `users` and
`items` (optional) are side tables keyed by the schema's user and item id columns (e.g. MovieLens's
user and item files, or a catalogue). Preparation (`prepare.normalise`) maps them through the schema.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class RawLog:
    name: str
    events: pd.DataFrame
    source_sha256: str
    users: pd.DataFrame | None = None
    items: pd.DataFrame | None = None
