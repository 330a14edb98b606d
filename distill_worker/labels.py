"""Soft labels: a persistent, write-once store keyed by (example, candidate, teacher version), so one
labelling pass serves several students and a restart never pays for a label twice."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
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
from recdistill.core.data.dense import DenseCandidates
from recdistill.core.features.encoder import Encoder, MappedContext
from recdistill.core.features.request import MAX_CANDIDATES

logger = logging.getLogger(__name__)
LABEL_LOOKUPS = Counter("recdistill_worker_label_lookups", "Soft-label lookups by result", ["result"])


class LabelWillNotComeError(TeacherRefusedError):
    """No label of the trainer's teacher version will come for this request (the teacher refused it, by the
    labeller's record; the labeller is done past it; the teacher serves another version): the request is set
    aside with the reason, as a teacher's refusal is, and asking again without dense candidates cannot help."""


@dataclass(frozen=True)
class LabelRequest:
    """`candidates`: the labels wanted; `dense`: dense candidates asked in the same teacher call, after them
    (the context holds both, in that order), stored with them, never waited for."""

    example_id: str
    candidates: Sequence[str]  # candidate item ids, in the order of the context's candidates
    context: MappedContext  # encoded for the teacher's view
    origin: Literal["request", "window"] = "request"  # a sampled request, or a training-window event
    dense: Sequence[str] = ()

    @classmethod
    def of(cls, record: SampledRequest, teacher_encoder: Encoder, dense: DenseCandidates | None = None,
           popular: Sequence[str] = ()) -> LabelRequest:
        """A sampled request's: every candidate it was served with, in the teacher's view, and with `dense`
        its dense candidates (from the request's history and `popular`, seeded by the request id; none it was
        served with; as many as the teacher's request can still hold)."""
        served = [str(c.item_id) for c in record.request.candidates]
        extra: list[str] = []
        if dense is not None:
            taken = set(served)
            chosen = dense.choose([str(e.item_id) for e in record.request.history], popular, seed=record.request_id)
            extra = [item for item in chosen if item not in taken][: max(0, MAX_CANDIDATES - len(served))]
        return cls(record.request_id, served,
                   teacher_encoder.map_request(record.request, now=record.request_ts, candidate_ids=served + extra),
                   dense=extra)

    @property
    def asked(self) -> list[str]:
        """Every candidate the teacher is asked about, in the context's order."""
        return [*self.candidates, *self.dense]

    def without_dense(self) -> LabelRequest:
        served = len(self.candidates)
        context = dataclasses.replace(self.context, cand_item=self.context.cand_item[:served],
                                      cand_cat=self.context.cand_cat[:served],
                                      cand_multi=self.context.cand_multi[:served],
                                      cand_num=self.context.cand_num[:served])
        return dataclasses.replace(self, context=context, dense=())


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
                soft += await _label_one(store, request, teacher)
            except TeacherRefusedError as exc:
                refused[index] = str(exc)
        return soft, refused


async def _label_one(store: Any, request: LabelRequest, teacher: TeacherClient) -> list[np.ndarray]:
    """One request's labels; one the teacher refuses with its dense candidates is asked again without them (a
    teacher that takes fewer candidates than the request and its dense ones)."""
    try:
        return await store.label([request], teacher)
    except TeacherRefusedError as exc:
        if not request.dense or isinstance(exc, LabelWillNotComeError):
            raise
        logger.warning("the teacher refused %s with its %d dense candidates (%s): asked again without them",
                       request.example_id, len(request.dense), exc)
        return await store.label([request.without_dense()], teacher)


def refuse_unlabelled(teacher: TeacherClient, requests: Sequence[LabelRequest], missing: list[int]) -> None:
    """A trainer pinned to a teacher version the teacher no longer serves reads labels, never asks for them."""
    settings = teacher.settings
    if missing and settings.trained_version != settings.teacher_version:
        ids = [requests[i].example_id for i in missing]
        raise LabelWillNotComeError(f"no label of teacher version {settings.trained_version} for {ids[:5]}"
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
        self.teacher_candidates = 0  # candidates the teacher was asked about (its cost), dense ones included

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

    def extra(self, example_id: str, candidates: Sequence[str], teacher_version: str) -> tuple[list[str], np.ndarray]:
        """The example's other labelled candidates (its dense ones), in the order they were stored."""
        taken = set(candidates)
        rows = [(c, p) for c, p in self._db.execute(
            "SELECT candidate, probability FROM soft_labels WHERE example_id = ? AND teacher_version = ? "
            "ORDER BY rowid", (example_id, teacher_version)).fetchall() if c not in taken]
        return [c for c, _ in rows], np.array([p for _, p in rows], dtype=np.float32)

    def saw(self, request_id: str) -> None:
        """Nothing to match: this store holds only labels its own host asked for."""

    def follow(self, read_to: object) -> None:
        """Nothing to follow: every label this store lacks, its trainer asks the teacher for."""

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
            self.put(requests[i].example_id, requests[i].asked, version, probabilities)
            self.teacher_candidates += len(probabilities)
            found[i] = np.asarray(probabilities[: len(requests[i].candidates)], dtype=np.float32)
        return found  # type: ignore[return-value]
