"""Soft labels shared through a log on the sample log's backends (`WORKER_LABEL_LOG`: file:DIR or
redis://HOST:PORT/N?stream=NAME): the teacher labels an example once, whichever trainer asks first, and
every trainer that shares the log (another scenario's, a restarted one, one on another host) finds the
labels there. The same interface as the local `LabelStore`, so the batch and stream phases use either.

With a labeller (`recdistill worker label`, `distill_worker.labeller`) every sampled request is labelled once,
as it arrives, and the trainers are told to read labels only (`labels_from = "labeller"`): they never call the
teacher, and wait (as for a teacher outage, nothing lost) while the labeller is behind.

Each store reads the whole log into an index (example, teacher version) -> candidate -> probability, then
only what is new before each lookup, at its own position (a restarted trainer reads it again from the start:
one scan, no teacher call). Labels are write-once: the first record of a key wins, a later one for the same
candidates is a duplicate (two trainers that missed at the same moment). Set aside with its reason
(`dead_letter`) and never used: a record that cannot be read, one whose probabilities do not agree with its
candidates, and a sampled request's label for a request the sample log does not hold (`sweep`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO

import numpy as np
from prometheus_client import Counter

from distill_worker.jobs import dead_letter_file
from distill_worker.labels import LabelRequest, LabelStore, LabelWillNotComeError, refuse_unlabelled, tally
from distill_worker.settings import WorkerSettings
from distill_worker.teacher_client import TeacherClient, TeacherUnavailableError
from recdistill.core.contracts.labels import TeacherLabels, decode_labels, encode_labels
from recdistill.core.contracts.records import InvalidRecordError
from recdistill.core.errors import ConfigError
from recdistill.core.samplelog.entry import Position, reached
from recdistill.core.samplelog.source import LogLocation, LogWriter, group_done, open_scan, open_writer

logger = logging.getLogger(__name__)
LABEL_RECORDS = Counter("recdistill_worker_label_log_records", "Label-log records read, by outcome", ["outcome"])
READ_CHUNK = 5_000
LABELLER_GROUP = "distill-labeller"  # the labeller's consumer group on the sample log
SEEN_KEEP_S = 3_600.0  # how long a request read waits for its label before it is forgotten (`saw`)


class LabelsPendingError(TeacherUnavailableError):
    """A trainer that reads labels only (from the labeller) found some not yet in the log: it waits and tries
    again, as through a teacher outage; nothing is lost."""


class SharedLabelStore:
    """`ask_teacher=False`: read labels only (the labeller writes them), waiting up to `wait_s` a batch for
    those not there yet, then `LabelsPendingError`; a label that will not come (the labeller is done past its
    request, and the log holds none of this version for it) is a refusal: the request is set aside with the
    reason, never waited for again."""

    def __init__(self, location: LogLocation, writer_id: str,
                 dead_letter: Callable[[bytes, str], None] | None = None, ask_teacher: bool = True,
                 wait_s: float = 5.0, labeller_done: Callable[[], dict[str, Position]] | None = None) -> None:
        self.location = location
        # Reading only: how far the labeller is done on the sample log (`group_done`), to tell a label that will
        # not come from one the labeller has not got to yet.
        self.labeller_done = labeller_done
        self._read_to: Mapping[str, Position] = {}
        self._marks: dict[str, dict[str, Position]] = {}  # example -> what this trainer had read when it missed
        self.ask_teacher, self.wait_s = ask_teacher, wait_s
        self.writer_id = writer_id
        self._writer: LogWriter | None = None  # opened at the first append: a reader claims no partition
        self._lock: IO | None = None
        self._scan = open_scan(location)
        self._positions: dict[str, Position] = {}
        self._index: dict[tuple[str, str], dict[str, float]] = {}
        self.dead_letter = dead_letter or (lambda payload, reason: logger.warning("label record set aside: %s",
                                                                                 reason))
        self.hits = 0
        self.misses = 0
        self.teacher_calls = 0
        self.teacher_candidates = 0  # candidates the teacher was asked about (its cost), dense ones included
        self.invalid = 0
        self.duplicates = 0
        self.unknown = 0  # labels of requests the sample log does not hold (`sweep`)
        self._unclaimed: dict[str, tuple[float, bytes]] = {}  # request labels whose request was not read yet
        self._seen: dict[str, float] = {}  # requests read whose label did not arrive yet -> when read
        self._refused: dict[tuple[str, str], str] = {}  # (example, teacher version) -> why the teacher refused it
        logger.info("teacher labels are shared through %s", location.target)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else float("nan")

    @property
    def dead_lettered(self) -> int:
        return self.invalid + self.unknown

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
        if labels.refused is not None:  # the teacher refused it: its trainers set it aside, never wait for it
            self._refused.setdefault((labels.example_id, labels.teacher_version),
                                     f"the teacher refused it (the labeller's record): {labels.refused}")
            self._seen.pop(labels.example_id, None)
            LABEL_RECORDS.labels(outcome="refusal").inc()
            return
        known = self._index.setdefault((labels.example_id, labels.teacher_version), {})
        fresh = {c: float(p) for c, p in zip(labels.candidates, labels.array, strict=True) if c not in known}
        if not fresh:
            self.duplicates += 1
            LABEL_RECORDS.labels(outcome="duplicate").inc()
            return
        known.update(fresh)  # write-once: a candidate's first label wins
        LABEL_RECORDS.labels(outcome="taken").inc()
        if labels.origin == "request" and self._seen.pop(labels.example_id, None) is None:
            self._unclaimed[labels.example_id] = (labels.created_unix, payload)

    def saw(self, request_id: str) -> None:
        """The trainer read this sampled request (any scenario's): its label is not one for an unknown request."""
        if self._unclaimed.pop(request_id, None) is None:
            self._seen[request_id] = time.time()

    def sweep(self, read_from_unix: float, caught_up_unix: float, slack_s: float) -> int:
        """Set aside the labels of requests the sample log does not hold: a label is written after its request
        was served, so one created in this trainer's reading (after `read_from_unix`) and more than `slack_s`
        (the sampler's write delay) before a read that found no backlog (`caught_up_unix`) whose request was
        never read has no request. Returns how many were set aside (removed from the index: never trained)."""
        self.refresh()
        horizon = caught_up_unix - slack_s
        unknown = [example for example, (created, _) in self._unclaimed.items()
                   if read_from_unix + slack_s <= created < horizon]
        for example in unknown:
            _, payload = self._unclaimed.pop(example)
            for key in [k for k in self._index if k[0] == example]:
                del self._index[key]
            self.unknown += 1
            LABEL_RECORDS.labels(outcome="unknown_request").inc()
            self.dead_letter(payload, f"a label for request {example}, which the sample log does not hold")
        self._unclaimed = {k: v for k, v in self._unclaimed.items() if v[0] >= read_from_unix + slack_s}
        stale = time.time() - SEEN_KEEP_S
        self._seen = {k: ts for k, ts in self._seen.items() if ts >= stale}
        return len(unknown)

    def get(self, example_id: str, candidates: Sequence[str], teacher_version: str) -> np.ndarray | None:
        known = self._index.get((example_id, teacher_version), {})
        if not all(c in known for c in candidates):
            return None
        return np.array([known[c] for c in candidates], dtype=np.float32)

    def extra(self, example_id: str, candidates: Sequence[str], teacher_version: str) -> tuple[list[str], np.ndarray]:
        """The example's other labelled candidates (its dense ones, whoever asked for them), in log order."""
        taken = set(candidates)
        rows = [(c, p) for c, p in self._index.get((example_id, teacher_version), {}).items() if c not in taken]
        return [c for c, _ in rows], np.array([p for _, p in rows], dtype=np.float32)

    def count(self, teacher_version: str | None = None) -> int:
        return sum(len(known) for (_, version), known in self._index.items()
                   if teacher_version is None or version == teacher_version)

    async def label(self, requests: Sequence[LabelRequest], teacher: TeacherClient) -> list[np.ndarray]:
        """Soft labels for every request: from the log when any trainer had them, else from the teacher (then
        appended to the log, in one write). Reading only: a label that will not come fails the batch as the
        teacher's refusal does (`label_each` then sets that request aside), one the labeller has not got to
        yet as `LabelsPendingError` (the trainer waits, as for an outage)."""
        version = teacher.settings.trained_version
        found = await self._lookup(requests, version)
        missing = tally(self, found)
        if self._marks:  # a label missed before came after all: forget what was read when it was missed
            for request, labels in zip(requests, found, strict=True):
                if labels is not None:
                    self._marks.pop(request.example_id, None)
        if missing and not self.ask_teacher:
            await asyncio.to_thread(self._give_up, [requests[i] for i in missing], version)
        refused = [i for i in missing if (requests[i].example_id, version) in self._refused]
        if refused:  # the batch fails as the teacher's refusal does; `label_each` then asks one by one
            first = requests[refused[0]].example_id
            raise LabelWillNotComeError(f"no label of teacher version {version} for {first} will come: "
                                        f"{self._refused[(first, version)]}")
        if missing and not self.ask_teacher:
            raise LabelsPendingError(f"{len(missing)} of {len(requests)} requests have no label of teacher version "
                                     f"{version} in {self.location} yet: the labeller is behind, or down")
        refuse_unlabelled(teacher, requests, missing)
        scored = await asyncio.gather(*(teacher.score(requests[i].context) for i in missing))
        self.teacher_calls += len(missing)
        self.teacher_candidates += sum(len(p) for p in scored)
        now = time.time()
        records = [TeacherLabels.of(requests[i].example_id, version, requests[i].asked, probabilities,
                                    now, requests[i].origin) for i, probabilities in zip(missing, scored, strict=True)]
        if records:
            payloads = [encode_labels(r) for r in records]
            await asyncio.to_thread(self._append, payloads)
            for payload in payloads:
                self._take(payload)
        for i, probabilities in zip(missing, scored, strict=True):
            found[i] = np.asarray(probabilities[: len(requests[i].candidates)], dtype=np.float32)
        return found  # type: ignore[return-value]

    def follow(self, read_to: Mapping[str, Position]) -> None:
        """The sample-log positions this trainer has read up to (its live offsets): a request it lacks a label
        for was read at or before them."""
        self._read_to = read_to

    def _give_up(self, requests: list[LabelRequest], version: str) -> None:
        """Of the examples without a label, those whose label will not come, set aside with the reason (as a
        teacher's refusal): the labeller is done with everything this trainer had read when it first missed
        them (the labeller appends labels before it commits), and the log, read after that, still lacks them.
        The labeller labelled them with another teacher version, or their record could not be read."""
        for request in requests:
            self._marks.setdefault(request.example_id, dict(self._read_to))
        if self.labeller_done is None:
            return
        done = self.labeller_done()  # before the log is read again: what it committed is in the log by then
        self.refresh()
        for request in requests:
            example = request.example_id
            if (example, version) in self._refused:  # the labeller's record of a refusal says why already
                self._marks.pop(example, None)
                continue
            if self.get(example, request.candidates, version) is not None or not reached(done, self._marks[example]):
                continue
            others = sorted(v for (e, v) in self._index if e == example and v != version)
            if (example, version) in self._index:
                reason = "the labeller moved past it and its label in the log lacks some of its candidates"
            elif others:
                reason = (f"the labeller labelled it with teacher version {', '.join(others)}, not {version}: this "
                          "trainer reads the labels of the version it was given (--label-version)")
            else:
                reason = ("the labeller moved past it and the log holds no readable label for it (see "
                          "labels-dead-letter.jsonl for a record that could not be read)")
            self._refused[(example, version)] = reason
            del self._marks[example]

    async def _lookup(self, requests: Sequence[LabelRequest], version: str) -> list[np.ndarray | None]:
        """The labels the log holds (read up to now); reading only, those not there yet are waited for up to
        `wait_s` (a request already known to have none coming is not waited for)."""
        deadline = time.monotonic() + (0 if self.ask_teacher else self.wait_s)
        while True:
            await asyncio.to_thread(self.refresh)
            found = [self.get(r.example_id, r.candidates, version) for r in requests]
            if time.monotonic() >= deadline or all(
                    labels is not None or (r.example_id, version) in self._refused
                    for r, labels in zip(requests, found, strict=True)):
                return found
            await asyncio.sleep(0.05)

    def refuse(self, example_id: str, teacher_version: str, reason: str) -> None:
        """Record in the log that the teacher refused the example, so no trainer waits for its labels."""
        payload = encode_labels(TeacherLabels.refusal(example_id, teacher_version, reason, time.time()))
        self._append([payload])
        self._take(payload)

    def _append(self, payloads: list[bytes]) -> None:
        if self._writer is None:
            self._writer, where, self._lock = open_writer(self.location, f"labels-{self.writer_id}")
            logger.info("this worker writes teacher labels to %s", where)
        self._writer.append(payloads)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._scan.close()
        if self._lock is not None:
            self._lock.close()


Labels = LabelStore | SharedLabelStore  # where the phases get soft labels


def open_label_store(settings: WorkerSettings) -> Labels:
    """The label log when one is configured (`label_log`; read only when `labels_from` is the labeller), else
    this worker's own SQLite store in its state directory (shared by the scenarios' trainers of one host). Label
    records set aside go to `state_dir/labels-dead-letter.jsonl`."""
    if settings.label_log is None:
        if settings.labels_from == "labeller":
            raise ConfigError("labels_from = labeller: the trainer reads the labeller's label log; set label_log "
                              "(--label-log) to the log `recdistill worker label` writes")
        return LabelStore(settings.state_dir / "labels.sqlite")
    reading = settings.labels_from == "labeller"
    samples = LogLocation.parse(settings.sample_log)
    return SharedLabelStore(LogLocation.parse(settings.label_log), settings.worker_id,
                            dead_letter_file(settings.state_dir / "labels-dead-letter.jsonl"),
                            ask_teacher=not reading, wait_s=settings.label_wait_s,
                            labeller_done=(lambda: group_done(samples, LABELLER_GROUP)) if reading else None)
