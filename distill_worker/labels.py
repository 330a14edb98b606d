"""Soft labels: a persistent, write-once store keyed by (example, candidate, teacher version), so one
labelling pass serves several students and a restart never pays for a label twice."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from prometheus_client import Counter

from distill_worker.teacher_client import TeacherClient, TeacherRefusedError
from recdistill.core.contracts.records import SampledRequest
from recdistill.core.features.encoder import Encoder, MappedContext

LABEL_LOOKUPS = Counter("recdistill_worker_label_lookups", "Soft-label lookups by result", ["result"])


@dataclass(frozen=True)
class LabelRequest:
    example_id: str
    candidates: Sequence[str]  # candidate item ids, in the order of the context's candidates
    context: MappedContext  # encoded for the teacher's view
    origin: Literal["request", "window"] = "request"  # a sampled request, or a training-window event

    @classmethod
    def of(cls, record: SampledRequest, teacher_encoder: Encoder) -> LabelRequest:
        """A sampled request's: every candidate it was served with, in the teacher's view."""
        return cls(record.request_id, [str(c.item_id) for c in record.request.candidates],
                   teacher_encoder.map_request(record.request, now=record.request_ts))


async def label_each(store: Any, requests: Sequence[LabelRequest], teacher: TeacherClient
                     ) -> tuple[list[np.ndarray], dict[int, str]]:
    """Soft labels of `store` (a label store) for the requests, and those the teacher refused (index -> reason,
    no label). A refused batch is retried one request at a time, so one bad request never costs the others
    their labels."""
    refused: dict[int, str] = {}
    try:
        return await store.label(requests, teacher), refused
    except TeacherRefusedError:
        soft: list[np.ndarray] = []
        for index, request in enumerate(requests):
            try:
                soft += await store.label([request], teacher)
            except TeacherRefusedError as exc:
                refused[index] = str(exc)
        return soft, refused


def refuse_unlabelled(teacher: TeacherClient, requests: Sequence[LabelRequest], missing: list[int]) -> None:
    """A trainer pinned to a teacher version the teacher no longer serves reads labels, never asks for them."""
    settings = teacher.settings
    if missing and settings.trained_version != settings.teacher_version:
        ids = [requests[i].example_id for i in missing]
        raise TeacherRefusedError(f"no label of teacher version {settings.trained_version} for {ids[:5]}"
                                  f"{' ...' if len(ids) > 5 else ''} ({len(ids)}), and the teacher serves "
                                  f"{settings.teacher_version}: this trainer only reads labels of "
                                  f"{settings.trained_version}")


def tally(store: Any, found: Sequence[np.ndarray | None]) -> list[int]:
    """The indices of the lookups that found nothing; counts hits and misses on `store` (a label store: its
    `hits` and `misses`) and in the metric."""
    missing = [i for i, labels in enumerate(found) if labels is None]
    store.hits += len(found) - len(missing)
    store.misses += len(missing)
    LABEL_LOOKUPS.labels(result="hit").inc(len(found) - len(missing))
    LABEL_LOOKUPS.labels(result="miss").inc(len(missing))
    return missing


class LabelStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS soft_labels (example_id TEXT NOT NULL, candidate TEXT NOT NULL, "
            "teacher_version TEXT NOT NULL, probability REAL NOT NULL, created_unix REAL NOT NULL, "
            "PRIMARY KEY (example_id, candidate, teacher_version))")
        self.hits = 0
        self.misses = 0

    def close(self) -> None:
        self._db.close()

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else float("nan")

    def get(self, example_id: str, candidates: Sequence[str], teacher_version: str) -> np.ndarray | None:
        rows = dict(self._db.execute(
            "SELECT candidate, probability FROM soft_labels WHERE example_id = ? AND teacher_version = ?",
            (example_id, teacher_version)).fetchall())
        if not all(c in rows for c in candidates):
            return None
        return np.array([rows[c] for c in candidates], dtype=np.float32)

    def saw(self, request_id: str) -> None:
        """Nothing to match: this store holds only labels its own host asked for."""

    def sweep(self, read_from_unix: float, caught_up_unix: float, slack_s: float) -> int:
        return 0

    def put(self, example_id: str, candidates: Sequence[str], teacher_version: str, probabilities: np.ndarray) -> None:
        """Write-once: a label already stored for the same key is kept, never overwritten."""
        now = time.time()
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT OR IGNORE INTO soft_labels VALUES (?, ?, ?, ?, ?)",
            [(example_id, c, teacher_version, float(p), now) for c, p in zip(candidates, probabilities, strict=True)])
        self._db.execute("COMMIT")

    def count(self, teacher_version: str | None = None) -> int:
        if teacher_version is None:
            return self._db.execute("SELECT COUNT(*) FROM soft_labels").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM soft_labels WHERE teacher_version = ?",
                                (teacher_version,)).fetchone()[0]

    async def label(self, requests: Sequence[LabelRequest], teacher: TeacherClient) -> list[np.ndarray]:
        """Soft labels for every request: from the store when present, else from the teacher (then stored)."""
        version = teacher.settings.trained_version
        found = [self.get(r.example_id, r.candidates, version) for r in requests]
        missing = tally(self, found)
        refuse_unlabelled(teacher, requests, missing)
        scored = await asyncio.gather(*(teacher.score(requests[i].context) for i in missing))
        for i, probabilities in zip(missing, scored, strict=True):
            self.put(requests[i].example_id, requests[i].candidates, version, probabilities)
            found[i] = probabilities
        return found  # type: ignore[return-value]
