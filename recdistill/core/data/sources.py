"""Where an interaction log comes from: the embedded MovieLens-100K, the synthetic e-commerce log, or
the user's own file (CSV, Parquet or JSON Lines)."""

from __future__ import annotations

from dataclasses import replace
from importlib import resources
from pathlib import Path

from recdistill.core.data.log import RawLog
from recdistill.core.errors import DataError

SCHEMAS = {"ml-100k": "movielens-100k.toml", "ecommerce": "ecommerce.toml", "instacart": "instacart.toml"}


def shipped_schema(name: str) -> Path:
    """The schema file shipped for a built-in dataset (`ml-100k`, `ecommerce`)."""
    return Path(str(resources.files("recdistill") / "schemas" / SCHEMAS[name]))


def load_log(dataset: str, catalogue: str | None = None) -> RawLog:
    """`ml-100k`, `instacart`, `ecommerce[:EVENTS]` (seeded synthetic), `csv:PATH`, `parquet:PATH` or `jsonl:PATH`;
    `catalogue` (`csv:` / `parquet:` / `jsonl:PATH`, one row per item, keyed by the schema's item id
    column) supplies item features, also for items the log never shows."""
    log = _load_log(dataset)
    if catalogue is None:
        return log
    from recdistill.core.data.userlog import read_table

    kind, _, path = catalogue.partition(":")
    if kind not in ("csv", "parquet", "jsonl") or not path:
        raise DataError(f"unknown catalogue '{catalogue}': use csv:PATH, parquet:PATH or jsonl:PATH")
    return replace(log, items=read_table(kind, Path(path)))


def _load_log(dataset: str) -> RawLog:
    from recdistill.core.data.ecommerce import generate_ecommerce
    from recdistill.core.data.movielens import load_movielens_100k
    from recdistill.core.data.userlog import load_user_log

    if dataset == "ml-100k":
        return load_movielens_100k()
    if dataset == "instacart":
        from recdistill.core.data.instacart import load_instacart

        return load_instacart()
    kind, _, rest = dataset.partition(":")
    if kind == "ecommerce":
        try:
            return generate_ecommerce(events=int(rest) if rest else 60_000)
        except ValueError:
            raise DataError(f"ecommerce:EVENTS needs a number of events, not '{rest}'") from None
    if kind in ("csv", "parquet", "jsonl") and rest:
        return load_user_log(kind, Path(rest))
    raise DataError(f"unknown dataset '{dataset}': use ml-100k, instacart, ecommerce[:EVENTS], csv:PATH, "
                    "parquet:PATH or jsonl:PATH")
