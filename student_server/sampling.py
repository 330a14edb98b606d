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
from typing import Any

from recdistill.samplelog import SampleLog
from student_server import metrics

logger = logging.getLogger(__name__)


@dataclass
class _Item:
    record: dict[str, Any]
    done: tuple[asyncio.AbstractEventLoop, asyncio.Future] | None = None


class TrafficSampler:
    def __init__(self, log: SampleLog, rate: float, capacity: int, seed: int | None = None,
                 long_history_rate: float | None = None, long_history_events: int = 100) -> None:
        self.log = log
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

    def offer(self, record: dict[str, Any]) -> bool:
        """Queue a sampled request without ever blocking; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(_Item(record))
        except queue.Full:
            metrics.DROPPED.labels(kind=record["kind"]).inc()
            return False
        return True

    async def write_durably(self, record: dict[str, Any]) -> None:
        """Queue a record and wait until it is on disk (feedback)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        try:
            self._queue.put_nowait(_Item(record, (loop, future)))
        except queue.Full:
            metrics.DROPPED.labels(kind=record["kind"]).inc()
            raise
        await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self.log.close()

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
            error: Exception | None = None
            try:
                self.log.append([item.record for item in batch])
                for item in batch:
                    metrics.SAMPLED.labels(kind=item.record["kind"]).inc()
            except Exception as exc:  # noqa: BLE001 - reported to the waiters, logged
                logger.exception("writing %d records to the sample log failed", len(batch))
                error = exc
            for item in batch:
                if item.done:
                    loop, future = item.done
                    loop.call_soon_threadsafe(_finish, future, error)


def _finish(future: asyncio.Future, error: Exception | None) -> None:
    if not future.done():
        future.set_exception(error) if error else future.set_result(None)
