"""The live stage: the student server serves replayed traffic while the worker promotes the batch
student and then streams, hot-swapping each accepted version during the replay."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.progress import Progress

from distill_worker.batch import publish_and_promote
from distill_worker.debias import Calibration
from distill_worker.labels import LabelStore
from distill_worker.promote import GateConfig, promote
from distill_worker.settings import TeacherClientSettings, WorkerSettings
from distill_worker.stream import StreamConfig, StreamWorker
from distill_worker.student import StudentModel
from distill_worker.teacher_client import TeacherClient
from distill_worker.trainer import DistillConfig
from recdistill.data.dataset import PreparedDataset
from recdistill.demo.config import DemoConfig
from recdistill.demo.replay import ReplayPlan, ReplayProcess, Served
from recdistill.features.encoder import Encoder
from recdistill.logs import STDERR
from recdistill.processes import child_process, free_port
from recdistill.training import EncodedSplit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudentServer:
    http_url: str
    grpc_target: str
    token: str
    sample_log: Path


@contextmanager
def student_server_process(registry: Path, sample_log: Path, config: DemoConfig, log_path: Path,
                           ready_timeout_s: float = 120.0) -> Iterator[StudentServer]:
    """`recdistill student serve` as a child process on free ports; SIGTERM on exit, also on errors."""
    http_port, grpc_port = free_port(), free_port()
    token = secrets.token_urlsafe(24)
    command = [str(Path(sys.executable).parent / "recdistill"), "student", "serve", "--registry", str(registry),
               "--port", str(http_port), "--grpc-port", str(grpc_port), "--sample-log", str(sample_log),
               "--sampling-rate", str(config.sampling_rate),
               "--sampling-rate-long-history", str(config.sampling_rate_long_history)]
    server = StudentServer(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", token, sample_log)
    with child_process(command, lambda: httpx.get(f"{server.http_url}/healthz", timeout=1).status_code == 200,
                       "student serve", ready_timeout_s, log_path, {"RECDISTILL_ADMIN_TOKEN": token},
                       stop_timeout_s=30):
        yield server


def stream_config(config: DemoConfig) -> StreamConfig:
    return StreamConfig(join_window_s=config.join_window_s, export_every=config.export_every, lr=config.stream_lr,
                        exposed_positions=config.exposed_positions)


@dataclass
class Swap:
    at_s: float  # since the replay started
    version: str
    phase: str  # baseline | batch | stream


@dataclass
class LiveResult:
    served: list[Served]
    swaps: list[Swap]
    refused: int
    stream_state: dict[str, Any]
    feedback_errors: int
    duration_s: float


async def live_stage(dataset: PreparedDataset, config: DemoConfig, settings: WorkerSettings,
                     teacher: TeacherClientSettings, distill: DistillConfig, server: StudentServer,
                     replay_events: list[int], gate_holdout: EncodedSplit, baseline_version: str,
                     batch_version: str | None, batch_model: StudentModel, calibration: Calibration | None,
                     state_dir: Path, replay_log: Path) -> LiveResult:
    """Serve the baseline (active at start-up), start the replay, promote the batch student, then stream
    until the replay ends and every sampled request's feedback window has closed."""
    replay = ReplayProcess(ReplayPlan(dataset.directory, replay_events, server.http_url, server.grpc_target,
                                      config.replay_rate, config.replay_concurrency, config.feedback_delay_s,
                                      config.exposed_positions, replay_log))
    replay.start()
    swaps = [Swap(0.0, baseline_version, "baseline")]
    refused = 0
    worker_settings = settings.model_copy(update={"server_url": server.http_url, "admin_token": server.token,
                                                  "version_prefix": "student-stream"})

    def since_start() -> float:
        started_unix = replay.started_unix.value
        return time.time() - started_unix if started_unix else 0.0

    def publisher(model: StudentModel) -> str | None:
        nonlocal refused
        report: dict[str, Any] = {"teacher_version": teacher.teacher_version}
        version = publish_and_promote(worker_settings, model, gate_holdout, report, GateConfig())
        if version:
            swaps.append(Swap(since_start(), version, "stream"))
        else:
            refused += 1
        return version

    client = TeacherClient(teacher, Encoder(dataset.schema, "teacher"))
    store = LabelStore(state_dir / "labels.sqlite")
    worker = StreamWorker(dataset, server.sample_log, state_dir, client, store, distill,
                          stream_config(config),
                          initial_model=batch_model, publisher=publisher,
                          soft_transform=calibration.transform if calibration else None)
    started = time.perf_counter()
    try:
        with Progress(transient=True, console=STDERR) as bars:
            bar = bars.add_task("replay (HTTP + gRPC) and streaming", total=replay.total)
            # The batch student goes live once a tenth of the replay has been served by the baseline.
            while batch_version and replay.sent.value < replay.total // 10 and not replay.done():
                bars.update(bar, completed=replay.sent.value)
                await asyncio.sleep(0.2)
            if batch_version:
                await asyncio.to_thread(promote, server.http_url, server.token, batch_version)
                swaps.append(Swap(since_start(), batch_version, "batch"))
            # Stream while the replay runs, then until every request's feedback window has closed.
            while True:
                replay_over = replay.done()  # all feedback acknowledged (hence durable) by then
                result = await worker.step()
                bars.update(bar, completed=replay.sent.value,
                            description=f"replay + streaming: {worker.state.examples_trained} streamed, "
                                        f"{len(swaps) - 1} swaps")
                if replay_over and not result["read"] and not worker.state.waiting:
                    break
                if not result["read"] and not result["trained"]:
                    await asyncio.sleep(0.5)
            if worker.state.since_export:  # the last partial interval
                version = await asyncio.to_thread(publisher, worker.model)
                if version:
                    worker.state.versions_promoted.append(version)
                worker.state.since_export = 0
                worker.checkpoint()
    finally:
        replay.stop()
        await client.close()
        store.close()
    served, feedback_errors = replay.results()
    # The server's own view of the replay (latency histograms, swap counters), kept with the logs.
    replay_log.with_name("student-server-metrics.prom").write_text(
        httpx.get(f"{server.http_url}/metrics", timeout=10).text)
    return LiveResult(served=served, swaps=swaps, refused=refused,
                      stream_state={k: v for k, v in vars(worker.state).items()
                                    if k not in ("waiting", "feedback", "feedback_seen", "offsets")},
                      feedback_errors=feedback_errors, duration_s=round(time.perf_counter() - started, 1))
