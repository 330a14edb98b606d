"""Traffic sampling and feedback intake: records go to the sample log (any backend) from a writer thread,
in batches, off the request path: the writer wakes once, lets a tick's worth of samples gather (`tick_s`),
then encodes and writes them in one append (one Redis pipeline, one file write) instead of one wake-up and
one round trip a request. Feedback is written at once. Samples are dropped (and counted) when the queue is
full. When the log cannot be written (the broker is down, the disk is full), sampled records wait in a
bounded buffer and are sent again by themselves once it recovers, in chunks (a disk with a little room takes
what fits); beyond the bound they are dropped and counted. Feedback is acknowledged only once it is durable:
it is refused (503, retry) rather than buffered, and it is appended on its own, never behind the buffer, so
it is taken again as soon as the log can hold it."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import random
import threading
from dataclasses import dataclass
from typing import IO

from recdistill.core.contracts.records import SampleRecord, encode_record
from recdistill.core.errors import OverloadedError, ValidationError
from recdistill.core.samplelog import LogWriter
from student_server import metrics

logger = logging.getLogger(__name__)
SEND_CHUNK = 500  # the most buffered records a write
TICK_S = 0.01  # how long sampled requests gather before one write (feedback never waits)


@dataclass
class _Item:
    record: SampleRecord
    done: tuple[asyncio.AbstractEventLoop, asyncio.Future] | None = None


class TrafficSampler:
    def __init__(self, log: LogWriter, rate: float, capacity: int, seed: int | None = None,
                 long_history_rate: float | None = None, long_history_events: int = 100,
                 partition_lock: IO | None = None, buffer: int = 50_000, retry_s: float = 0.5,
                 source_rates: dict[str, float] | None = None, tick_s: float = TICK_S) -> None:
        self.log = log
        self._buffer: collections.deque[bytes] = collections.deque()  # encoded samples awaiting a retry
        self._buffer_limit = buffer
        self._retry_s = retry_s
        self._failures = 0
        self._chunk = SEND_CHUNK  # halved after each failed write of the buffer, doubled after each success
        self._partition_lock = partition_lock  # held (open) while this process writes the partition
        self.rate = rate
        self.long_history_rate = rate if long_history_rate is None else long_history_rate
        self.long_history_events = long_history_events
        self.source_rates = source_rates or {}
        self._random = random.Random(seed)
        # Appended on the event loop, taken by the writer (deque operations are atomic); the writer is woken
        # only when it sleeps on `_wake`, not once a record.
        self._queue: collections.deque[_Item] = collections.deque()
        self._capacity = capacity
        self._tick_s = tick_s
        self._wake = threading.Event()
        self._waiting = False
        self._feedback_waiting = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sample-log-writer", daemon=True)
        self._thread.start()

    def probability(self, history_events: int, source: str | None = None) -> float:
        """The rate by history length, times the rate of the caller's traffic source (1 when it has none)."""
        rate = self.long_history_rate if history_events >= self.long_history_events else self.rate
        return rate * self.source_rates.get(source, 1.0) if source is not None else rate

    def should_sample(self, probability: float) -> bool:
        return probability > 0 and self._random.random() < probability

    def offer(self, record: SampleRecord) -> bool:
        """Queue a sampled request without ever blocking; False (and counted) when the queue is full."""
        return self._put(_Item(record))

    async def write_durably(self, record: SampleRecord) -> None:
        """Queue a record and wait until it is on disk (feedback); `OverloadedError` when the queue is full."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._put(_Item(record, (loop, future))):
            raise OverloadedError("the sample-log queue is full; retry later", retry_after_s=1.0)
        await future

    def _put(self, item: _Item) -> bool:
        if len(self._queue) >= self._capacity:
            metrics.DROPPED.labels(kind=_kind(item.record), reason="queue_full").inc()
            return False
        self._queue.append(item)
        if item.done:
            self._feedback_waiting = True  # written without waiting for the tick
        if self._waiting:  # set before the writer sleeps, after it last looked at the queue: no wake-up is lost
            self._wake.set()
        return True

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.log.close()
        if self._partition_lock is not None:
            self._partition_lock.close()

    @property
    def queued(self) -> int:
        """Records waiting for the writer."""
        return len(self._queue)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def _sleep_until_needed(self) -> None:
        """Until a record is queued, the writer stops, or a retry of the buffer is due."""
        self._waiting = True
        if not self._queue and not self._stop.is_set():
            timeout = min(5.0, self._retry_s * 2 ** min(self._failures, 4)) if self._buffer else None
            self._wake.wait(timeout)
        self._waiting = False
        self._wake.clear()

    def _take(self, most: int) -> list[_Item]:
        batch: list[_Item] = []
        while self._queue and len(batch) < most:
            batch.append(self._queue.popleft())
        return batch

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sleep_until_needed()
            if self._queue and not self._feedback_waiting:
                self._stop.wait(self._tick_s)  # let a tick's samples gather: one write for all of them
            self._feedback_waiting = False
            batch = self._take(1_000)
            if batch or self._buffer:
                self._write(batch)
        while self._queue:  # stopping: what is still queued gets its write (buffered if the log is down)
            self._write(self._take(1_000))
        if self._buffer:
            logger.warning("stopping with %d sampled records still buffered (the sample log is unavailable): "
                           "dropped", len(self._buffer))
            metrics.DROPPED.labels(kind="request", reason="buffer_full").inc(len(self._buffer))
            self._buffer.clear()
            metrics.BUFFERED.set(0)

    def _write(self, batch: list[_Item]) -> None:
        # Encoded one by one: a record msgpack cannot hold is refused alone, not with its batch.
        errors: dict[int, Exception] = {}
        durable: dict[int, bytes] = {}  # feedback: acknowledged once written
        failure: Exception | None = None
        for index, item in enumerate(batch):
            try:
                payload = encode_record(item.record)
            except (TypeError, ValueError, OverflowError) as exc:
                errors[index] = ValidationError("body", f"cannot be stored in the sample log: {exc}")
                metrics.DROPPED.labels(kind=_kind(item.record), reason="unencodable").inc()
                continue
            if item.done:
                durable[index] = payload
            else:
                self._buffer.append(payload)  # sampled requests go out behind the ones already waiting
        if durable:
            try:
                self.log.append(list(durable.values()))
                metrics.SAMPLED.labels(kind="feedback").inc(len(durable))
            except Exception as exc:  # noqa: BLE001 - broker down, disk full, I/O: refused, the sender retries
                failure = exc
                reason = getattr(exc, "strerror", None) or exc
                for index in durable:
                    errors[index] = OverloadedError(f"the sample log cannot be written now ({reason}); retry "
                                                    "later", retry_after_s=5.0)
                metrics.DROPPED.labels(kind="feedback", reason="log_unavailable").inc(len(durable))
        sent = 0
        while self._buffer and failure is None:
            chunk = list(itertools.islice(self._buffer, self._chunk))
            try:
                self.log.append(chunk)
            except Exception as exc:  # noqa: BLE001 - kept for the next try, in a smaller chunk
                failure = exc
                self._chunk = max(1, self._chunk // 2)
                break
            self._chunk = min(SEND_CHUNK, self._chunk * 2)
            for _ in chunk:
                self._buffer.popleft()
            sent += len(chunk)
            metrics.SAMPLED.labels(kind="request").inc(len(chunk))
        overflow = len(self._buffer) - self._buffer_limit
        if overflow > 0:  # the oldest go first: the freshest traffic is worth most to the stream
            for _ in range(overflow):
                self._buffer.popleft()
            metrics.DROPPED.labels(kind="request", reason="buffer_full").inc(overflow)
        self._health(failure, sent)
        metrics.BUFFERED.set(len(self._buffer))
        for index, item in enumerate(batch):
            if item.done:
                loop, future = item.done
                loop.call_soon_threadsafe(_finish, future, errors.get(index))

    def _health(self, failure: Exception | None, sent: int) -> None:
        if failure is None:
            if self._failures:
                logger.info("the sample log is writable again: %d waiting records sent", sent)
            self._failures = 0
            metrics.LOG_UP.set(1)
            return
        self._failures += 1
        metrics.LOG_UP.set(0)
        if self._failures == 1:
            logger.error("writing to the sample log failed (%s); sampled records wait in a buffer (up to %d) and "
                         "are sent again, feedback is refused until it can be written", failure, self._buffer_limit)


def _finish(future: asyncio.Future, error: Exception | None) -> None:
    if not future.done():
        future.set_exception(error) if error else future.set_result(None)


def _kind(record: SampleRecord) -> str:
    return type(record).__struct_config__.tag  # type: ignore[attr-defined]
