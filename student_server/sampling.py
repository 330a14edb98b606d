"""Traffic sampling and feedback intake: records go to the sample log from a writer thread, in
batches, off the request path. Samples are dropped (and counted) when the queue is full; feedback
is acknowledged only once it is durable."""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
from dataclasses import dataclass
from typing import IO

from recdistill.core.contracts.records import SampleRecord, encode_record
from recdistill.core.errors import OverloadedError, ValidationError
from recdistill.core.samplelog import SampleLog
from student_server import metrics

logger = logging.getLogger(__name__)


@dataclass
class _Item:
    record: SampleRecord
    done: tuple[asyncio.AbstractEventLoop, asyncio.Future] | None = None


class TrafficSampler:
    def __init__(self, log: SampleLog, rate: float, capacity: int, seed: int | None = None,
                 long_history_rate: float | None = None, long_history_events: int = 100,
                 partition_lock: IO | None = None) -> None:
        self.log = log
        self._partition_lock = partition_lock  # held (open) while this process writes the partition
        self.rate = rate
        self.long_history_rate = rate if long_history_rate is None else long_history_rate
        self.long_history_events = long_history_events
        self._random = random.Random(seed)
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="sample-log-writer", daemon=True)
        self._thread.start()

    def probability(self, history_events: int) -> float:
        return self.long_history_rate if history_events >= self.long_history_events else self.rate

    def should_sample(self, probability: float) -> bool:
        return probability > 0 and self._random.random() < probability

    def offer(self, record: SampleRecord) -> bool:
        """Queue a sampled request without ever blocking; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(_Item(record))
        except queue.Full:
            metrics.DROPPED.labels(kind=_kind(record)).inc()
            return False
        return True

    async def write_durably(self, record: SampleRecord) -> None:
        """Queue a record and wait until it is on disk (feedback); `OverloadedError` when the queue is full."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        try:
            self._queue.put_nowait(_Item(record, (loop, future)))
        except queue.Full:
            metrics.DROPPED.labels(kind=_kind(record)).inc()
            raise OverloadedError("the sample-log queue is full; retry later", retry_after_s=1.0) from None
        await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self.log.close()
        if self._partition_lock is not None:
            self._partition_lock.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch = [] if first is None else [first]
            stopping = first is None
            while len(batch) < 1_000:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            if not batch:
                continue
            # Encoded one by one: a record msgpack cannot hold is refused alone, not with its batch.
            errors: dict[int, Exception] = {}
            payloads = []
            for index, item in enumerate(batch):
                try:
                    payloads.append(encode_record(item.record))
                except (TypeError, ValueError, OverflowError) as exc:
                    errors[index] = ValidationError("body", f"cannot be stored in the sample log: {exc}")
                    metrics.DROPPED.labels(kind=_kind(item.record)).inc()
            written = [item for index, item in enumerate(batch) if index not in errors]
            try:
                if payloads:
                    self.log.append(payloads)
                for item in written:
                    metrics.SAMPLED.labels(kind=_kind(item.record)).inc()
            except Exception as exc:  # noqa: BLE001 - disk full, file too large, I/O: nothing of the batch kept
                logger.error("writing %d records to the sample log failed: %s", len(payloads), exc)
                reason = getattr(exc, "strerror", None) or exc
                unavailable = OverloadedError(f"the sample log cannot be written now ({reason}); retry later",
                                              retry_after_s=5.0)
                for index, item in enumerate(batch):
                    if index not in errors:
                        errors[index] = unavailable
                        metrics.DROPPED.labels(kind=_kind(item.record)).inc()
            for index, item in enumerate(batch):
                if item.done:
                    loop, future = item.done
                    loop.call_soon_threadsafe(_finish, future, errors.get(index))


def _finish(future: asyncio.Future, error: Exception | None) -> None:
    if not future.done():
        future.set_exception(error) if error else future.set_result(None)


def _kind(record: SampleRecord) -> str:
    return type(record).__struct_config__.tag  # type: ignore[attr-defined]
