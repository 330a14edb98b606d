"""Where an interaction log comes from: the embedded MovieLens-100K, or the user's own file."""

from __future__ import annotations

from pathlib import Path

from recdistill.core.data.log import InteractionLog
from recdistill.core.errors import DataError


def load_log(dataset: str) -> InteractionLog:
    """`ml-100k`, `csv:PATH` or `parquet:PATH`."""
    from recdistill.core.data.movielens import load_movielens_100k
    from recdistill.core.data.userlog import load_user_log

    if dataset == "ml-100k":
        return load_movielens_100k()
    kind, _, path = dataset.partition(":")
    if kind in ("csv", "parquet") and path:
        return load_user_log(kind, Path(path))
    raise DataError(f"unknown dataset '{dataset}': use ml-100k, csv:PATH or parquet:PATH")
