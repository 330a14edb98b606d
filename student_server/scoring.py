"""ONNX Runtime scoring: a versioned `Scorer` and a micro-batcher that merges concurrent requests
into one ONNX Runtime call per version on a dedicated thread, so inference never runs on the event loop."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from recdistill.core.contracts.onnx import serving_session
from recdistill.core.contracts.registry import Manifest
from recdistill.core.features.encoder import Encoder, MappedContext
from student_server import metrics

logger = logging.getLogger(__name__)


@dataclass
class Scorer:
    """One loaded model version, with the encoder of its scenario's view (what its batches are assembled by)."""

    version: str
    manifest: Manifest
    session: ort.InferenceSession
    encoder: Encoder

    @classmethod
    def load(cls, path: Path, version: str, manifest: Manifest, threads: int, encoder: Encoder,
             providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> Scorer:
        return cls(version, manifest, serving_session(path, threads, providers), encoder)

    def run(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, tensors)[0]


@dataclass
class _Pending:
    context: MappedContext
    scorer: Scorer  # chosen when the request arrived: a swap meanwhile never splits or moves a request
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class MicroBatcher:
    """Scores mapped contexts in batches on one thread, one ONNX Runtime call per version in the batch (two
    while an A/B test runs, one more per scenario served); each result is the candidates' probabilities."""

    def __init__(self, max_requests: int, max_wait_us: int) -> None:
        self.max_requests = max_requests
        self.max_wait_s = max_wait_us / 1e6
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="onnx-batcher", daemon=True)
        self._thread.start()

    def submit(self, context: MappedContext, scorer: Scorer) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Pending(context, scorer, loop, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _collect(self, first: _Pending) -> list[_Pending]:
        batch = [first]
        deadline = None
        while len(batch) < self.max_requests:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if not self.max_wait_s:
                    break
                now = time.perf_counter()
                deadline = deadline or now + self.max_wait_s
                if now >= deadline:
                    break
                try:
                    item = self._queue.get(timeout=deadline - now)
                except queue.Empty:
                    break
            if item is None:
                self._queue.put(None)
                break
            batch.append(item)
        return batch

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = self._collect(first)
            metrics.SCORING_QUEUE.set(len(batch) + self._queue.qsize())
            by_scorer: dict[int, list[int]] = {}
            for index, pending in enumerate(batch):
                by_scorer.setdefault(id(pending.scorer), []).append(index)
            results: list[Any] = [None] * len(batch)
            for indices in by_scorer.values():
                group = [batch[i] for i in indices]
                try:
                    tensors, _ = group[0].scorer.encoder.assemble([p.context for p in group])
                    probabilities = group[0].scorer.run(tensors)
                    for row, (index, pending) in enumerate(zip(indices, group, strict=True)):
                        results[index] = probabilities[row, : len(pending.context.cand_item)]
                except Exception as exc:  # noqa: BLE001 - delivered to every waiting request of the group
                    logger.exception("scoring a batch of %d on version %s failed", len(group), group[0].scorer.version)
                    for index in indices:
                        results[index] = exc
            # One wake-up per event loop and batch, not one per request.
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any]]] = {}
            for pending, result in zip(batch, results, strict=True):
                by_loop.setdefault(pending.loop, []).append((pending.future, result))
            for loop, outcomes in by_loop.items():
                loop.call_soon_threadsafe(_resolve, outcomes)
            metrics.SCORING_QUEUE.set(self._queue.qsize())


def _resolve(outcomes: list[tuple[asyncio.Future, Any]]) -> None:
    for future, result in outcomes:
        if future.done():
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)
