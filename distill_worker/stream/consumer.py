"""The stream's consumer: reading new sample-log records past the state's positions (the checkpoint's
`StreamState`), de-duplicating them, and joining feedback to requests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from distill_worker.settings import StreamConfig
from recdistill.core.contracts.records import InvalidRecordError, SampledRequest, SampleRecord, decode_record
from recdistill.core.contracts.worker import StreamState
from recdistill.core.features.spec import ScenarioSpec
from recdistill.core.places import ScenarioPlace
from recdistill.core.samplelog import LogEntry, LogSource

RECORDS = Counter("recdistill_worker_records_consumed", "Sample-log records consumed", ["kind"])
DUPLICATES = Counter("recdistill_worker_duplicates", "Sample-log records skipped: their sample id was taken before")


@dataclass
class StepResult:
    read: int
    trained: int
    published: str | None = None
    refused: bool = False


@dataclass(frozen=True)
class ScenarioFilter:
    """Which sampled requests a scenario's trainer takes (each scenario's trainer reads the whole log): every
    request when the scenario lists no traffic sources, else those it served (a record from before scenarios
    counts as the first scenario's) and those from its traffic sources, whichever scenario served them."""

    place: ScenarioPlace
    traffic: frozenset[str]

    @classmethod
    def of(cls, spec: ScenarioSpec, place: ScenarioPlace) -> ScenarioFilter:
        return cls(place, frozenset(spec.traffic))

    def takes(self, record: SampledRequest) -> bool:
        if not self.traffic:
            return True
        return self.place.serves(record.scenario) or record.traffic_source in self.traffic


class SampleConsumer:
    """Reads new records from the sample log (any backend) past the state's positions, de-duplicates them
    by sample id where delivery is at least once, and joins feedback to requests."""

    def __init__(self, source: LogSource, state: StreamState, config: StreamConfig,
                 dead_letter: Callable[[bytes, str, str], None], request_type: type,
                 scenario: ScenarioFilter | None = None, saw: Callable[[str], None] | None = None) -> None:
        self.source = source
        self.saw = saw  # told every sampled request read (any scenario's), for the label store's matching
        self.scenario = scenario  # None: every sampled request
        self.request_type = request_type  # the schema's request struct: records are validated as at the edge
        self.state = state
        self.config = config
        self.dead_letter = dead_letter  # (payload, request id or "", reason)
        self._decoded: dict[str, SampledRequest] = {}  # the waiting requests, decoded (the state keeps bytes)
        self._behind: dict[str, float] = {}  # partition -> server time of the newest record read from it
        self._keys: list[str] = []  # sample ids taken since the last commit
        self.read_from_unix = 0.0  # when this process first read the log
        self.caught_up_unix = 0.0  # when the last read that found no backlog began

    def _record(self, payload: bytes) -> SampleRecord | None:
        try:
            # An unknown format stops the worker with an error naming it.
            return decode_record(payload, self.request_type)
        except InvalidRecordError as exc:
            self.dead_letter(payload, "", str(exc))
            return None

    def _duplicate(self, record: SampleRecord) -> bool:
        if isinstance(record, SampledRequest):
            return record.request_id in self.state.waiting
        return record.item_id in self.state.feedback.get(record.request_id, {})

    def consume(self) -> int:
        """Read new records into the state; returns how many were read (duplicates and unreadable ones too)."""
        started = time.time()
        self.read_from_unix = self.read_from_unix or started
        entries, behind = self.source.read(self.state.offsets, self.config.max_records)
        if not behind:
            self.caught_up_unix = started
        records: list[tuple[LogEntry, SampleRecord, str]] = []
        for entry in entries:
            if entry.replayed:  # in the checkpoint already: re-marked and acknowledged, not taken again
                with contextlib.suppress(InvalidRecordError):  # an unreadable one was dead-lettered the first time
                    self._keys.append(_sample_key(decode_record(entry.payload, self.request_type)))
                continue
            self.state.offsets[entry.partition] = entry.position
            self.state.records_consumed += 1
            record = self._record(entry.payload)
            if record is not None:
                records.append((entry, record, _sample_key(record)))
        seen = self.source.seen([key for _, _, key in records]) if self.source.at_least_once else []
        last_ts: dict[str, float] = {}
        batch: set[str] = set()
        for index, (entry, record, key) in enumerate(records):
            if (seen and seen[index]) or key in batch or self._duplicate(record):
                self.state.duplicates += 1
                DUPLICATES.inc()
                continue
            batch.add(key)
            self._keys.append(key)
            last_ts[entry.partition] = self._take(record, entry.payload)
        for partition in set(self._behind) - behind:
            del self._behind[partition]  # caught up: nothing older can still arrive from it
        for partition in behind & set(last_ts):
            self._behind[partition] = last_ts[partition]
        return sum(not e.replayed for e in entries)

    def event_time(self, now: float) -> float:
        """How far event time has surely got: `now`, held back to the newest record read from any partition
        the worker has not caught up with (a backlog). Join windows close in event time, so a click still
        in the backlog is never outrun by the training of its request."""
        return min([now, *self._behind.values()])

    def _take(self, record: SampleRecord, payload: bytes) -> float:
        """Take one record into the state; returns its server time."""
        if isinstance(record, SampledRequest):
            RECORDS.labels(kind="request").inc()
            if self.saw is not None:
                self.saw(record.request_id)
            if self.scenario is not None and not self.scenario.takes(record):
                self.state.other_scenario += 1
                return record.ts
            if record.policy == "random" and not self.config.train_on_exploration:
                self.state.exploration_held_out += 1
                return record.ts
            self.state.waiting[record.request_id] = payload
            self._decoded[record.request_id] = record
            return record.ts
        RECORDS.labels(kind="feedback").inc()
        # Feedback may come before its request record (the sampler writes asynchronously): keep it.
        self.state.feedback.setdefault(record.request_id, {})[record.item_id] = record.label
        self.state.feedback_seen.setdefault(record.request_id, record.received_ts)
        return record.received_ts

    def prune_feedback(self, now: float) -> None:
        """Feedback that matched no waiting request for two windows arrived after its request was trained."""
        now = self.event_time(now)
        horizon = 2 * self.config.join_window_s
        for request_id, seen in list(self.state.feedback_seen.items()):
            if request_id not in self.state.waiting and now - seen >= horizon:
                self.state.unmatched_feedback += len(self.state.feedback.pop(request_id, {}))
                del self.state.feedback_seen[request_id]

    def due(self, now: float) -> list[SampledRequest]:
        """Requests whose feedback window has closed in event time, oldest first."""
        now = self.event_time(now)
        waiting = [self._decoded.get(request_id) or self._decoded.setdefault(
                       request_id, decode_record(payload, self.request_type))  # decoded once (restored state: lazily)
                   for request_id, payload in self.state.waiting.items()]
        return sorted((r for r in waiting if now - r.ts >= self.config.join_window_s), key=lambda r: r.ts)

    def release(self, records: list[SampledRequest]) -> None:
        """Trained: forget the requests and the feedback joined to them."""
        for record in records:
            self.state.waiting.pop(record.request_id)
            self._decoded.pop(record.request_id, None)
            self.state.feedback_joined += len(self.state.feedback.pop(record.request_id, {}))
            self.state.feedback_seen.pop(record.request_id, None)

    def commit(self) -> None:
        """Tell the log what the checkpoint now holds (call after each checkpoint)."""
        self.source.commit(self.state.offsets, self._keys)
        self._keys = []


def _sample_key(record: SampleRecord) -> str:
    """The sample id: a request's id, or a feedback's request id and item."""
    if isinstance(record, SampledRequest):
        return record.request_id
    return f"{record.request_id}/fb/{record.item_id}"
