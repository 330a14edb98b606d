"""The worker's view of the teacher: a black box behind Triton's gRPC API (tritonclient aio).

Concurrent `score` calls are merged into one Triton request of up to `max_batch_rows` contexts or
whatever arrived within `max_wait_ms`; at most `max_concurrency` requests are in flight; each is
retried with jittered exponential backoff on transient status codes (UNAVAILABLE, DEADLINE_EXCEEDED,
NOT_FOUND while the model registers, ...); the model's own errors (INTERNAL: e.g. input it refused) are not retried;
a circuit breaker fails fast while the teacher keeps failing. While a stream runs, `watch` asks the
teacher's readiness every second with a short deadline: `teacher_up` says what the last probe or request
found (a stopped teacher that holds its connections open is down too), and the teacher's return wakes a
stream that waits for it (`wait_for_return`) and closes the breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from distill_worker.breaker import CircuitBreaker
from distill_worker.settings import TeacherClientSettings
from recdistill.core.contracts.teacher import TEACHER_OUTPUT, infer_inputs
from recdistill.core.errors import RecDistillError
from recdistill.core.features.encoder import Encoder, MappedContext

logger = logging.getLogger(__name__)

TEACHER_LATENCY = Histogram("recdistill_worker_teacher_seconds", "Latency of one Triton request")
TEACHER_ROWS = Counter("recdistill_worker_teacher_rows", "Contexts sent to the teacher")
TEACHER_RETRIES = Counter("recdistill_worker_teacher_retries", "Retried Triton requests")
TEACHER_UP = Gauge("recdistill_worker_teacher_up", "1 while the teacher answers within its deadline, 0 while the "
                   "worker waits for it")
# Retried by gRPC status code: transient transport or load states. NOT_FOUND too: while Triton (re)starts,
# its port answers before the model is registered; a wrong model name fails after the retries.
RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "NOT_FOUND"})


class TeacherError(RecDistillError):
    """The teacher refused a request or stayed unreachable through every retry."""


class TeacherRefusedError(TeacherError):
    """The teacher answered, and refused the input (not retried: the same input fails again)."""


class TeacherUnavailableError(TeacherError):
    """The teacher could not be reached through every retry; a later call may succeed."""


@dataclass
class _Pending:
    context: MappedContext
    future: asyncio.Future


class TeacherClient:
    def __init__(self, settings: TeacherClientSettings, encoder: Encoder) -> None:
        import tritonclient.grpc.aio as aioclient

        self.settings = settings
        self.encoder = encoder
        self._aio = aioclient
        self._client = aioclient.InferenceServerClient(settings.url)
        self._pending: list[_Pending] = []
        self._flush_task: asyncio.Task | None = None
        self._in_flight = asyncio.Semaphore(settings.max_concurrency)
        self._tasks: set[asyncio.Task] = set()
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)
        self.requests_sent = 0
        self.up = True  # what the last probe or request found
        self._answering = asyncio.Event()
        self._answering.set()
        self._watcher: asyncio.Task | None = None

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._pending:
            await self._flush()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.close()

    def watch(self) -> None:
        """Start probing the teacher's readiness (once; stopped by `close`)."""
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            try:
                ready = bool(await self._client.is_model_ready(self.settings.model_name,
                                                               client_timeout=self.settings.probe_timeout_s))
            except Exception:  # noqa: BLE001 - no answer in time, refused, unreachable: all mean down
                ready = False
            self._mark(ready)
            await asyncio.sleep(self.settings.probe_period_s)

    def _mark(self, up: bool) -> None:
        if up and not self.up:
            logger.info("the teacher answers again")
            self.breaker.success()  # no need to wait out the cool-down: it answered
        elif not up and self.up:
            logger.warning("the teacher does not answer within its deadline")
        self.up = up
        TEACHER_UP.set(int(up))
        if up:
            self._answering.set()
        else:
            self._answering.clear()

    async def wait_for_return(self, timeout_s: float) -> None:
        """Sleep up to `timeout_s`, or until a teacher found down answers again."""
        if self.up:
            await asyncio.sleep(timeout_s)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._answering.wait(), timeout_s)

    async def score(self, context: MappedContext) -> np.ndarray:
        """The teacher's probability for each candidate of one context."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(context, future))
        if len(self._pending) >= self.settings.max_batch_rows:
            await self._flush()
        elif self._flush_task is None:
            self._flush_task = asyncio.create_task(self._flush_later())
        return await future

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.settings.max_wait_ms / 1e3)
        self._flush_task = None
        await self._flush()

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if self._flush_task is not None:
            self._flush_task.cancel()
            self._flush_task = None
        if batch:
            task = asyncio.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        async with self._in_flight:
            try:
                tensors, _ = self.encoder.assemble([p.context for p in batch])
                probabilities = await self._infer_with_retries(tensors)
                for row, pending in enumerate(batch):
                    if not pending.future.done():
                        pending.future.set_result(probabilities[row, : len(pending.context.cand_item)])
            except Exception as exc:  # noqa: BLE001 - every waiting caller gets the error
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)

    async def _infer_with_retries(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        from tritonclient.utils import InferenceServerException

        settings = self.settings
        for attempt in range(settings.retries + 1):
            self.breaker.check()
            started = time.perf_counter()
            try:
                result = await self._client.infer(
                    settings.model_name, infer_inputs(tensors, self._aio),
                    outputs=[self._aio.InferRequestedOutput(TEACHER_OUTPUT)], client_timeout=settings.timeout_s)
            except InferenceServerException as exc:
                status = str(exc.status() or "").rsplit(".", 1)[-1]  # "StatusCode.UNAVAILABLE" -> "UNAVAILABLE"
                if status not in RETRYABLE:
                    raise TeacherRefusedError(f"teacher refused the request: {exc.message()}") from None
                self.breaker.failure()
                self._mark(False)
                if attempt == settings.retries:
                    raise TeacherUnavailableError(f"teacher unreachable after {attempt + 1} attempts: "
                                                  f"{exc.message()}") from None
                delay = min(settings.backoff_max_s, settings.backoff_base_s * 2**attempt) * random.uniform(0.5, 1.0)
                TEACHER_RETRIES.inc()
                logger.warning("teacher request failed (%s); retry %d in %.2fs", status, attempt + 1, delay)
                await asyncio.sleep(delay)
                continue
            self.breaker.success()
            self._mark(True)
            TEACHER_LATENCY.observe(time.perf_counter() - started)
            TEACHER_ROWS.inc(tensors["cand_item"].shape[0])
            self.requests_sent += 1
            return result.as_numpy(TEACHER_OUTPUT)
        raise AssertionError("unreachable")
