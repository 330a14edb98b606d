"""Soft labels shared through a log on the sample log's backends (`WORKER_LABEL_LOG`: file:DIR or
redis://HOST:PORT/N?stream=NAME): the teacher labels an example once, whichever trainer asks first, and
every trainer that shares the log (another scenario's, a restarted one, one on another host) finds the
labels there. The same interface as the local `LabelStore`, so the batch and stream phases use either.

Each store reads the whole log into an index (example, teacher version) -> candidate -> probability, then
only what is new before each lookup. Labels are write-once: the first record of a key wins, a later one
for the same candidates is a duplicate (two trainers that missed at the same moment). A record that cannot
be read, or whose probabilities do not agree with its candidates, is set aside with its reason
(`dead_letter`) and never used."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
from prometheus_client import Counter

from distill_worker.labels import LabelRequest, LabelStore, refuse_unlabelled, tally
from distill_worker.settings import WorkerSettings
from distill_worker.teacher_client import TeacherClient
from recdistill.core.contracts.labels import TeacherLabels, decode_labels, encode_labels
from recdistill.core.contracts.records import InvalidRecordError
from recdistill.core.samplelog.entry import Position
from recdistill.core.samplelog.source import LogLocation, open_scan, open_writer

logger = logging.getLogger(__name__)
LABEL_RECORDS = Counter("recdistill_worker_label_log_records", "Label-log records read, by outcome", ["outcome"])
READ_CHUNK = 5_000


class SharedLabelStore:
    def __init__(self, location: LogLocation, writer_id: str,
                 dead_letter: Callable[[bytes, str], None] | None = None) -> None:
        self.location = location
        self._writer, where, self._lock = open_writer(location, f"labels-{writer_id}")
        self._scan = open_scan(location)
        self._positions: dict[str, Position] = {}
        self._index: dict[tuple[str, str], dict[str, float]] = {}
        self.dead_letter = dead_letter or (lambda payload, reason: logger.warning("label record set aside: %s",
                                                                                 reason))
        self.hits = 0
        self.misses = 0
        self.teacher_calls = 0
        self.invalid = 0
        self.duplicates = 0
        logger.info("teacher labels are shared through %s (this worker writes %s)", location.target, where)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else float("nan")

    def refresh(self) -> int:
        """Read what the log gained since the last call into the index; returns how many records were read."""
        read = 0
        while True:
            entries, behind = self._scan.read(self._positions, READ_CHUNK)
            for entry in entries:
                self._positions[entry.partition] = entry.position
                self._take(entry.payload)
            read += len(entries)
            if not behind:
                return read

    def _take(self, payload: bytes) -> None:
        try:
            labels = decode_labels(payload)
        except InvalidRecordError as exc:
            self.invalid += 1
            LABEL_RECORDS.labels(outcome="invalid").inc()
            self.dead_letter(payload, str(exc))
            return
        known = self._index.setdefault((labels.example_id, labels.teacher_version), {})
        fresh = {c: float(p) for c, p in zip(labels.candidates, labels.array, strict=True) if c not in known}
        if not fresh:
            self.duplicates += 1
            LABEL_RECORDS.labels(outcome="duplicate").inc()
            return
        known.update(fresh)  # write-once: a candidate's first label wins
        LABEL_RECORDS.labels(outcome="taken").inc()

    def get(self, example_id: str, candidates: Sequence[str], teacher_version: str) -> np.ndarray | None:
        known = self._index.get((example_id, teacher_version), {})
        if not all(c in known for c in candidates):
            return None
        return np.array([known[c] for c in candidates], dtype=np.float32)

    def count(self, teacher_version: str | None = None) -> int:
        return sum(len(known) for (_, version), known in self._index.items()
                   if teacher_version is None or version == teacher_version)

    async def label(self, requests: Sequence[LabelRequest], teacher: TeacherClient) -> list[np.ndarray]:
        """Soft labels for every request: from the log when any trainer had them, else from the teacher (then
        appended to the log, in one write)."""
        await asyncio.to_thread(self.refresh)
        version = teacher.settings.trained_version
        found = [self.get(r.example_id, r.candidates, version) for r in requests]
        missing = tally(self, found)
        refuse_unlabelled(teacher, requests, missing)
        scored = await asyncio.gather(*(teacher.score(requests[i].context) for i in missing))
        self.teacher_calls += len(missing)
        now = time.time()
        records = [TeacherLabels.of(requests[i].example_id, version, list(requests[i].candidates), probabilities,
                                    now) for i, probabilities in zip(missing, scored, strict=True)]
        if records:
            payloads = [encode_labels(r) for r in records]
            await asyncio.to_thread(self._writer.append, payloads)
            for payload in payloads:
                self._take(payload)
        for i, probabilities in zip(missing, scored, strict=True):
            found[i] = np.asarray(probabilities, dtype=np.float32)
        return found  # type: ignore[return-value]

    def close(self) -> None:
        self._writer.close()
        self._scan.close()
        if self._lock is not None:
            self._lock.close()


Labels = LabelStore | SharedLabelStore  # where the phases get soft labels


def open_label_store(settings: WorkerSettings) -> Labels:
    """The label log when one is configured (`label_log`), else this worker's own SQLite store in its state
    directory (shared by the scenarios' trainers of one host)."""
    if settings.label_log is None:
        return LabelStore(settings.state_dir / "labels.sqlite")
    return SharedLabelStore(LogLocation.parse(settings.label_log), settings.worker_id)
