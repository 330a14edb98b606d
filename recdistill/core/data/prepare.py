"""Turn an interaction log into a prepared dataset, as its schema file declares: time split, per-user
timelines, slates, and the fitted feature schema.

Layout of a prepared dataset directory (the manifest is written last and marks it complete):
- events.parquet:    one row per event, sorted by time: event_id, user_id, item_id, timestamp, label,
                     action, value, weight, the context columns, split, hist_len, slate_negatives
- timelines.parquet: per user, all events oldest first: item_ids, actions, values, timestamps. The
                     history of an event is `timeline[:hist_len]`: the user's events strictly earlier.
- users.parquet, items.parquet: the raw user and item feature columns, one row per user / item;
  features.json: the fitted schema; schema.toml: the schema file it was fitted from; manifest.json.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recdistill.core.contracts.dataset import DatasetManifest, DatasetSplit, DatasetStats
from recdistill.core.data.log import RawLog
from recdistill.core.errors import DataError
from recdistill.core.features.label import evaluate_label, maybe_numeric
from recdistill.core.features.request import TS_MAX, UNIT_NAMES
from recdistill.core.features.schema import build_schema, canonical_action, is_missing, split_list
from recdistill.core.features.spec import (
    TIMESTAMP_UNITS,
    SchemaError,
    SchemaSpec,
    SourceSpec,
    parse_schema_spec,
)
from recdistill.core.fileio import atomic_write_bytes, atomic_write_text, atomic_write_with
from recdistill.core.settings import DataSettings

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


# ---- normalisation: the schema says what each source column means ----------------------------------
def _require(frame: pd.DataFrame, column: str, what: str, where: str) -> None:
    if column not in frame:
        shown = ", ".join(map(str, list(frame.columns)[:30]))
        raise SchemaError(f"{what} reads column `{column}`, which {where} lacks (its columns: {shown})")


def _first_rows(events: pd.DataFrame, key: str, columns: list[str]) -> pd.DataFrame:
    """One row per `key`: its first event's values of `columns` (events are in time order)."""
    return events[[key, *columns]].drop_duplicates(key, keep="first").reset_index(drop=True)


def _side_table(events: pd.DataFrame, side: pd.DataFrame | None, key: str, source_key: str,
                columns: list[str], what: dict[str, str], where: str) -> pd.DataFrame:
    """The user or item table: the source's side table (e.g. a catalogue) where it has a value, else the
    first event row of that user or item."""
    ids = pd.DataFrame({key: pd.unique(events[key])})
    table = ids
    from_side: list[str] = []
    if side is not None:
        _require(side, source_key, "the side table's id", "the side table")
        side = side.rename(columns={source_key: key}).assign(**{key: lambda f: f[key].astype(str)})
        side = side.drop_duplicates(key)
        from_side = [c for c in columns if c in side]
        how = "outer" if key == "item_id" else "left"  # a catalogue may list items never interacted with
        table = ids.merge(side[[key, *from_side]], on=key, how=how)
    rest = [c for c in columns if c not in from_side]
    for column in rest:
        _require(events, column, what[column], where)
    # The event rows fill what the side table lacks: its missing columns, and its empty cells.
    fill = [c for c in from_side if c in events]
    if rest or fill:
        first = _first_rows(events, key, rest + fill).rename(columns={c: f"{c}\0events" for c in fill})
        table = table.merge(first, on=key, how="left")
        for column in fill:
            backup = table.pop(f"{column}\0events")
            table[column] = table[column].astype(object)  # text from a CSV, numbers or lists from the events
            missing = table[column].map(is_missing)
            table.loc[missing, column] = backup[missing]
    return table[[key, *columns]]



def normalise(log: RawLog, spec: SchemaSpec) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(events, users, items) with the normalised columns preparation and the encoder use."""
    source, raw = spec.source, log.events
    where = f"the '{log.name}' events"
    for column, what in ((source.user_id, "source.user_id"), (source.item_id, "source.item_id"),
                         (source.timestamp, "source.timestamp")):
        _require(raw, column, what, where)
    events = pd.DataFrame({"user_id": raw[source.user_id].astype(str), "item_id": raw[source.item_id].astype(str),
                           "timestamp": _seconds(raw[source.timestamp], source, where),
                           "label": evaluate_label(source.label, raw)})
    for name in ("action", "value", "weight"):
        column = getattr(source, name)
        if column:
            _require(raw, column, f"source.{name}", where)
            values = maybe_numeric(raw[column])
            events[name] = [canonical_action(v) for v in values] if name == "action" else \
                pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    if source.session:
        _require(raw, source.session, "source.session", where)
        events["session"] = raw[source.session].astype(str).to_numpy()
    if "action" not in events:
        events["action"] = ""
    for feature in spec.context_features:
        _require(raw, feature.source, f"feature `{feature.name}`", where)
        events[feature.source] = _typed(raw[feature.source], feature.kind, feature.separator)
    # The first event of a user / item supplies its features when the source has no side table for them.
    order = np.argsort(events["timestamp"].to_numpy(), kind="stable")
    by_time = raw.iloc[order].assign(user_id=events["user_id"].to_numpy()[order],
                                     item_id=events["item_id"].to_numpy()[order])
    user_what = {f.source: f"feature `{f.name}`" for f in spec.user_features}
    item_what = {f.source: f"feature `{f.name}`" for f in spec.item_features}
    users = _side_table(by_time, log.users, "user_id", source.user_id, list(user_what), user_what, where)
    items = _side_table(by_time, log.items, "item_id", source.item_id, list(item_what), item_what, where)
    for features, table in ((spec.user_features, users), (spec.item_features, items)):
        for feature in features:
            table[feature.source] = _typed(table[feature.source], feature.kind, feature.separator)
    return events, users, items


# Unix seconds a prepared timeline may hold: a later value is a unit declared too small (milliseconds read as
# seconds reach the year 55,000); an absolute time before 1973 read in a larger unit was most likely seconds.
_PLAUSIBLE_SECONDS = (0, TS_MAX)
_ABSOLUTE_SECONDS = 1e8  # 1973-03-03


def _seconds(column: pd.Series, source: SourceSpec, where: str) -> pd.Series:
    """`source.timestamp` in unix seconds (int64 for a log in seconds, float64 from a finer unit, so that
    the order within a second survives), refused with an error naming `timestamp_unit` when the values are
    plainly not in the declared unit. Runs before anything is written."""
    name, unit = f"`{source.timestamp}` (source.timestamp)", source.timestamp_unit
    values = pd.to_numeric(column, errors="coerce")
    if values.isna().any() or not np.isfinite(values).all():
        raise DataError(f"{where}: column {name} must hold numbers (unix time in {UNIT_NAMES[unit]}), with no "
                        "missing values")
    seconds = values.astype(np.float64) / source.units_per_second
    low, high = float(seconds.min()), float(seconds.max())
    fits = [u for u, per in TIMESTAMP_UNITS.items()
            if _PLAUSIBLE_SECONDS[0] <= values.min() / per and values.max() / per <= _PLAUSIBLE_SECONDS[1]]
    hint = f"; the values fit timestamp_unit = \"{fits[0]}\"" if fits and fits[0] != unit else ""
    if low < _PLAUSIBLE_SECONDS[0] or high > _PLAUSIBLE_SECONDS[1]:
        raise DataError(f"{where}: column {name} holds {values.min():.6g} .. {values.max():.6g}, which as "
                        f"{UNIT_NAMES[unit]} is not a unix time (before 1970 or after the year 5000): set "
                        f"[source] timestamp_unit to the column's unit{hint}")
    if unit != "s" and high < _ABSOLUTE_SECONDS <= float(values.min()):
        raise DataError(f"{where}: column {name} holds {values.min():.6g} .. {values.max():.6g}: as "
                        f"{UNIT_NAMES[unit]} every event falls before 1973, as seconds they are dates; "
                        f"check [source] timestamp_unit (declared \"{unit}\")")
    return values.astype(np.int64) if unit == "s" else seconds


def _typed(values: pd.Series, kind: str, separator: str) -> pd.Series:
    if kind == "multi_categorical":
        return pd.Series([split_list(v, separator) for v in values], index=values.index, dtype=object)
    if kind in ("numeric", "bucketized"):
        return pd.to_numeric(values, errors="coerce").astype(np.float64)
    return pd.Series([canonical_action(v) for v in maybe_numeric(values)], index=values.index, dtype=object)


# ---- splits, histories, slates ------------------------------------------------------------------------
def _sort_events(events: pd.DataFrame) -> pd.DataFrame:
    ordered = events.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    return ordered.assign(event_id=np.arange(len(ordered), dtype=np.int64))


def _assign_split(events: pd.DataFrame, fractions: tuple[float, float]) -> tuple[pd.DataFrame, dict[str, int]]:
    valid_start = int(np.quantile(events["timestamp"], fractions[0]))
    test_start = int(np.quantile(events["timestamp"], fractions[1]))
    split = np.where(events["timestamp"] < valid_start, "train",
                     np.where(events["timestamp"] < test_start, "valid", "test"))
    return events.assign(split=split), {"valid_start_ts": valid_start, "test_start_ts": test_start}


def _history_lengths(events: pd.DataFrame) -> np.ndarray:
    """For each event, how many of its user's events lie strictly earlier in time."""
    hist_len = np.zeros(len(events), dtype=np.int64)
    for _, rows in events.groupby("user_id", sort=False).indices.items():
        ts = events["timestamp"].to_numpy()[rows]  # rows are in time order already
        hist_len[rows] = np.searchsorted(ts, ts, side="left")
    return hist_len


def _timelines(events: pd.DataFrame) -> pd.DataFrame:
    frame = events if "value" in events else events.assign(value=np.nan)
    grouped = frame.groupby("user_id", sort=True)
    return pd.DataFrame({
        "user_id": list(grouped.groups),
        "item_ids": grouped["item_id"].agg(list).to_list(),
        "actions": grouped["action"].agg(list).to_list(),
        "values": grouped["value"].agg(list).to_list(),
        "timestamps": grouped["timestamp"].agg(list).to_list(),
    })


def _slate_negatives(events: pd.DataFrame, catalogue: np.ndarray, k: int, seed: int, own_share: float = 0.0
                     ) -> tuple[list[list[str]], dict[str, float | int]]:
    """k items per event: `round(k * own_share)` of them from the user's own earlier items that the event's
    session (`session`, e.g. its order) does not contain, drawn uniformly (all there are when fewer), the
    rest from items the user had not interacted with before it (nor is it the event's item),
    popularity-weighted by training counts (+1); distinct, seeded. Items the user meets only later stay
    eligible: a negative never knows the future. Also returns where the negatives came from, and the share
    of the others that the user interacts with later."""
    train_counts = events.loc[events["split"] == "train", "item_id"].value_counts()
    weights = train_counts.reindex(catalogue).fillna(0).to_numpy(dtype=np.float64) + 1.0
    cdf = np.cumsum(weights) / weights.sum()
    rng = np.random.default_rng(seed)
    items = events["item_id"].to_numpy()
    sessions = events["session"].to_numpy() if "session" in events else None
    hist_len = events["hist_len"].to_numpy()
    negatives: list[list[str]] = [[] for _ in range(len(events))]
    slate_event = events["slate_event"].to_numpy()
    own_wanted = round(k * own_share)
    later = drawn = own = 0
    for _, rows in events.groupby("user_id", sort=True).indices.items():
        every = set(items[rows])
        in_session: dict[Any, set[str]] = {}
        if sessions is not None and own_wanted:
            for row in rows:
                in_session.setdefault(sessions[row], set()).add(items[row])
        seen: dict[str, None] = {}  # insertion-ordered: draws are reproducible
        passed = 0  # rows[:passed] lie strictly before the current event and are in `seen`
        for row in rows:
            while passed < hist_len[row]:
                seen[items[rows[passed]]] = None
                passed += 1
            if not slate_event[row]:
                continue
            excluded = set(seen) | {items[row]}
            if len(catalogue) - len(excluded) < k - own_wanted:
                continue
            chosen: dict[str, None] = {}
            if own_wanted:
                session = in_session.get(sessions[row], set()) if sessions is not None else set()
                eligible = [item for item in seen if item not in session and item != items[row]]
                if eligible:
                    picks = rng.choice(len(eligible), size=min(own_wanted, len(eligible)), replace=False)
                    chosen |= {eligible[i]: None for i in sorted(picks)}
            own += len(chosen)
            while len(chosen) < k:
                draws = catalogue[np.minimum(np.searchsorted(cdf, rng.random(4 * k)), len(catalogue) - 1)]
                for item in draws:
                    if item not in excluded and item not in chosen:
                        chosen[item] = None
                        if len(chosen) == k:
                            break
            fresh = [item for item in chosen if item not in seen]
            negatives[row] = list(chosen)
            drawn += len(fresh)
            later += sum(item in every for item in fresh)
    total = own + drawn
    return negatives, {"own_history": own, "not_interacted_before": drawn,
                       "own_history_share": round(own / total, 4) if total else 0.0,
                       "interacted_later_share": round(later / drawn, 4) if drawn else 0.0}


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    atomic_write_with(path, lambda handle: frame.to_parquet(handle, index=False))


def prepare(log: RawLog, spec: SchemaSpec, out_dir: Path, settings: DataSettings | None = None,
            spec_text: str | None = None) -> DatasetManifest:
    """Prepare `log` as `spec` declares into `out_dir`. Nothing is left there unless it all succeeds (the
    manifest, written last, marks a complete dataset); a bad schema or data raises before any write."""
    settings = settings or DataSettings()
    started = time.perf_counter()
    events, users, items = normalise(log, spec)
    if events.empty:
        raise DataError(f"interaction log '{log.name}' has no events")
    events = _sort_events(events)
    events, boundaries = _assign_split(events, settings.split_fractions)
    events["hist_len"] = _history_lengths(events)
    catalogue = np.array(sorted(set(items["item_id"]) | set(events["item_id"])), dtype=object)
    slate = spec.tasks.slate
    negatives = slate.negatives if slate else 0
    events["slate_event"] = (events["label"] == 1) if slate and slate.positives == "label" else slate is not None
    events["slate_negatives"], sources = _slate_negatives(events, catalogue, negatives, settings.seed,
                                                         slate.own_history_share) if slate and negatives \
        else ([[] for _ in range(len(events))], {})
    schema = build_schema(spec, events[events["split"] == "train"], users, items)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    _write_parquet(events, out_dir / "events.parquet")
    _write_parquet(_timelines(events), out_dir / "timelines.parquet")
    _write_parquet(users, out_dir / "users.parquet")
    _write_parquet(items, out_dir / "items.parquet")
    schema.save(out_dir / "features.json")
    if spec_text is not None:
        atomic_write_text(out_dir / "schema.toml", spec_text)

    hist = events["hist_len"].to_numpy()
    manifest = DatasetManifest(
        dataset=log.name, schema=spec.name, source_sha256=log.source_sha256, created_unix=int(time.time()),
        schema_hash=schema.hash,
        stats=DatasetStats(
            users=int(events["user_id"].nunique()), items=int(events["item_id"].nunique()),
            catalogue_items=len(catalogue), interactions=len(events),
            positive_rate=round(float(events["label"].mean()), 4),
            history_length_percentiles={f"p{q}": int(np.percentile(hist, q)) for q in (50, 90, 99)}
            | {"max": int(hist.max())}),
        split=DatasetSplit(
            **boundaries, fractions=list(settings.split_fractions),
            counts={name: int((events["split"] == name).sum()) for name in SPLITS},
            rule="train: ts < valid_start_ts; valid: ts < test_start_ts; test: the rest"),
        tasks={
            "ctr": f"each event is an impression; label = {spec.source.label}",
            "slate": f"each {'clicked ' if slate and slate.positives == 'label' else ''}event: the item interacted "
                     f"with plus {negatives} items the user had not interacted with before it, sampled by "
                     f"training popularity (seed {settings.seed}); label 1 for the real item",
        },
        seed=settings.seed, slate_negatives=negatives,
        slate_negatives_interacted_later_share=sources.get("interacted_later_share", 0.0),
        slate_negative_sources=sources,
        files=["events.parquet", "timelines.parquet", "users.parquet", "items.parquet", "features.json"],
        seconds=round(time.perf_counter() - started, 2))
    atomic_write_bytes(out_dir / "manifest.json", manifest.to_json())
    logger.info("prepared %s with schema %s into %s in %.1fs", log.name, spec.name, out_dir, manifest.seconds)
    return manifest


def prepare_source(source: str, schema_path: Path, out_dir: Path, settings: DataSettings | None = None,
                   catalogue: str | None = None) -> DatasetManifest:
    """`recdistill data prepare`: read the schema file (a bad one stops here, before anything is read or
    written), load the source (`ml-100k`, `ecommerce[:EVENTS]`, `csv:` / `parquet:` / `jsonl:PATH`, and an
    optional item catalogue), prepare."""
    from recdistill.core.data.sources import load_log

    if not schema_path.is_file():
        raise SchemaError(f"schema file not found: {schema_path}")
    text = schema_path.read_text()
    spec = parse_schema_spec(text, str(schema_path))
    return prepare(load_log(source, catalogue), spec, out_dir, settings, spec_text=text)
