"""A user's own interaction log from CSV, Parquet or JSON Lines: one row per impression or interaction.

Which columns hold the user, the item, the time, the label and the features is the schema file's
business (`[source]` and the feature declarations); user and item features are read from the event
rows (the first row of each user / item in time), or from a catalogue the caller passes.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recdistill.core.data.log import RawLog
from recdistill.core.data.movielens import sha256_file
from recdistill.core.errors import DataError


def read_table(kind: str, path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{kind} file not found: {path}")
    try:
        if kind == "csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        if kind == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        return pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read it as {kind}: {exc}") from None


def load_user_log(kind: str, path: Path) -> RawLog:
    frame = read_table(kind, path)
    if frame.empty:
        raise DataError(f"{path}: no rows")
    return RawLog(name=path.stem, events=frame, source_sha256=sha256_file(path))
