"""The live stage: the student server serves replayed traffic while the worker promotes the batch
student and then streams, hot-swapping each accepted version during the replay."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.progress import Progress

from distill_worker import (
    Calibration,
    StepResult,
    StreamConfig,
    StreamHooks,
    StudentModel,
    WorkerSettings,
    labeller_main,
    promote_version,
    stream_main,
)
from recdistill.core.contracts.labels import LabellerReport
from recdistill.core.contracts.registry import Holdback, to_builtins
from recdistill.core.contracts.worker import StandbyReport, StreamReport, StreamState
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.logs import STDERR
from recdistill.core.processes import lower_priority
from recdistill.core.training import EncodedSplit
from recdistill.demo.config import DemoConfig
from recdistill.demo.logging_policy import NICHE, traffic_sources
from recdistill.demo.replay import ReplayPlan, ReplayProcess, Served
from student_server import StudentServer, student_process

logger = logging.getLogger(__name__)


@contextmanager
def student_server_process(registry: Path, sample_log: str, config: DemoConfig, log_path: Path,
                           ready_timeout_s: float = 120.0) -> Iterator[StudentServer]:
    """The student server with the demo's sampling and exploration settings (the launcher: free ports, a
    fresh operator token, SIGTERM on exit, also on errors)."""
    flags = ("--sampling-rate", str(config.sampling_rate),
             "--sampling-rate-long-history", str(config.sampling_rate_long_history),
             "--sampling-rate-by-source", f"{NICHE}={config.search_sampling_rate}",
             "--exploration-rate", str(config.exploration_rate))
    with student_process(registry, sample_log, *flags, ready="healthz", ready_timeout_s=ready_timeout_s,
                         log_path=log_path) as (server, _):
        yield server


def stream_config(config: DemoConfig) -> StreamConfig:
    return StreamConfig(join_window_s=config.join_window_s, export_every=config.export_every, lr=config.stream_lr,
                        exposed_positions=config.exposed_positions, idle_s=0.5)


@dataclass
class Swap:
    at_s: float  # since the replay started
    version: str
    phase: str  # baseline | batch | stream


@dataclass(frozen=True)
class ScenarioLive:
    """A scenario beside the first, live: its batch student (active in its registry from the start) streamed on
    from the requests routed to it."""

    name: str
    model: StudentModel
    calibration: Calibration | None
    gate_holdout: EncodedSplit


@dataclass
class ScenarioServed:
    served: list[Served]  # the requests routed to the scenario
    stream_state: StreamReport | StandbyReport  # its trainer's report
    versions: list[str]  # promoted by its trainer during the replay


@dataclass
class LiveResult:
    served: list[Served]  # the first scenario's requests (`/v1/rank`)
    swaps: list[Swap]
    holdback: Holdback | None  # the A/B test's control arm (the baseline), from `holdback_at_s` on
    holdback_at_s: float | None
    refused: int
    stream_state: StreamReport | StandbyReport | None  # the first scenario's trainer's report
    feedback_errors: int
    duration_s: float
    scenarios: dict[str, ScenarioServed] = field(default_factory=dict)  # the others, by name
    labeller: LabellerReport | None = None


def scenario_routes(event_ids: list[int], names: list[str], share: float) -> dict[int, str]:
    """Event id -> the scenario beside the first it is sent to: about `share` of the replay, in turn."""
    if not names or share <= 0:
        return {}
    every = max(1, round(1 / share))
    chosen = [e for i, e in enumerate(event_ids) if i % every == every - 1]
    return {e: names[i % len(names)] for i, e in enumerate(chosen)}


async def live_stage(config: DemoConfig, settings: WorkerSettings, server: StudentServer, replay_events: list[int],
                     gate_holdout: EncodedSplit, baseline_version: str, batch_version: str | None,
                     batch_model: StudentModel, calibration: Calibration | None, replay_log: Path,
                     scenarios: Sequence[ScenarioLive] = ()) -> LiveResult:
    """Serve the baseline (active at start-up), start the replay, promote the batch student while an A/B test
    keeps `holdback_share` of users on the baseline, then run the worker's stream phase (the same driver as
    `recdistill worker run --mode stream`) until the replay has ended and every sampled request's feedback
    window has closed."""
    sources = await asyncio.to_thread(traffic_sources, PreparedDataset(settings.data), replay_events)
    routes = scenario_routes(replay_events, [s.name for s in scenarios], config.scenario_share)
    replay = ReplayProcess(ReplayPlan(settings.data, replay_events, server.http_url, server.grpc_target,
                                      config.replay_rate, config.replay_concurrency, config.feedback_delay_s,
                                      config.exposed_positions, replay_log, sources, routes))
    replay.start()
    # From here this process is the worker beside serving: it yields the cores to the server and the replay
    # (started above, at the normal priority). Client CPU per request is ~2x on HTTP (httpx, pure Python)
    # than on gRPC (C core), so a starved client inflated the HTTP latency it measured far more.
    lower_priority(config.background_niceness)
    swaps = [Swap(0.0, baseline_version, "baseline")]
    worker_settings = settings.model_copy(update={"server_url": server.http_url, "admin_token": server.token,
                                                  "version_prefix": "student-stream", "sample_log": server.sample_log,
                                                  "stream": stream_config(config)})

    def since_start() -> float:
        started_unix = replay.started_unix.value
        return time.time() - started_unix if started_unix else 0.0

    def on_publish(version: str | None) -> None:
        if version:
            swaps.append(Swap(since_start(), version, "stream"))

    started = time.perf_counter()
    holdback: Holdback | None = None
    holdback_at_s: float | None = None
    try:
        with Progress(transient=True, console=STDERR) as bars:
            bar = bars.add_task("replay (HTTP + gRPC) and streaming", total=replay.total)
            if batch_version:
                holdback, holdback_at_s = await _promote_batch(config, server, replay, lambda: bars.update(
                    bar, completed=replay.sent.value), batch_version, baseline_version, swaps, since_start)

            def on_step(_: StepResult, state: StreamState) -> None:
                bars.update(bar, completed=replay.sent.value,
                            description=f"replay + streaming: {state.examples_trained} streamed, "
                                        f"{len(swaps) - 1} swaps")

            # Until the replay is over (all its feedback acknowledged, hence durable) and drained.
            hooks = StreamHooks(until=replay.done, on_publish=on_publish, on_step=on_step)
            # The labeller labels every sampled request once, whichever scenario served it, until every trainer
            # has finished (a request's record can land after the replay's end: the sampler writes behind the
            # response); each scenario's trainer, beside the first's over the same sample log (its own consumer
            # group), reads its labels.
            trained = asyncio.Event()
            labelling = asyncio.create_task(labeller_main(worker_settings, until=trained.is_set))
            others = [stream_main(worker_settings.model_copy(update={"scenario": s.name}),
                                  hooks=StreamHooks(until=replay.done), initial_model=s.model,
                                  calibration=s.calibration, holdout=s.gate_holdout) for s in scenarios]
            try:
                (stream_report, _), *other_reports = await asyncio.gather(
                    stream_main(worker_settings, hooks=hooks, initial_model=batch_model, calibration=calibration,
                                holdout=gate_holdout), *others)
            finally:
                trained.set()
                labelled = await labelling
    finally:
        replay.stop()
    every, feedback_errors = replay.results()
    served = [s for s in every if s.scenario is None]
    by_scenario = _scenarios_served(every, scenarios, [report for report, _ in other_reports])
    # The server's own view of the replay (latency histograms, swap counters), kept with the logs.
    replay_log.with_name("student-server-metrics.prom").write_text(
        httpx.get(f"{server.http_url}/metrics", timeout=10).text)
    return LiveResult(served=served, swaps=swaps, holdback=holdback, holdback_at_s=holdback_at_s,
                      refused=stream_report.exports_refused if isinstance(stream_report, StreamReport) else 0,
                      stream_state=stream_report, feedback_errors=feedback_errors,
                      duration_s=round(time.perf_counter() - started, 1), scenarios=by_scenario,
                      labeller=labelled)


async def _promote_batch(config: DemoConfig, server: StudentServer, replay: ReplayProcess, progress: Callable[[], None],
                         batch_version: str, baseline_version: str, swaps: list[Swap],
                         since_start: Callable[[], float]) -> tuple[Holdback | None, float | None]:
    """The batch student goes live once a tenth of the replay has been served by the baseline, and the A/B test
    (`holdback_share` of users kept on the baseline) starts: (the holdback, when it started) or (None, None)."""
    while replay.sent.value < replay.total // 10 and not replay.done():
        progress()
        await asyncio.sleep(0.2)
    await asyncio.to_thread(promote_version, server.http_url, server.token, batch_version)
    swaps.append(Swap(since_start(), batch_version, "batch"))
    if not config.holdback_share:
        return None, None
    holdback = Holdback(version=baseline_version, share=config.holdback_share, salt="demo")
    await _start_holdback(server, holdback)
    return holdback, since_start()


def _scenarios_served(every: list[Served], scenarios: Sequence[ScenarioLive],
                      reports: list[StreamReport | StandbyReport]) -> dict[str, ScenarioServed]:
    """What each other scenario served during the replay, with its trainer's counts and promotions."""
    return {s.name: ScenarioServed([r for r in every if r.scenario == s.name], report,
                                   report.versions_promoted if isinstance(report, StreamReport) else [])
            for s, report in zip(scenarios, reports, strict=True)}


async def _start_holdback(server: StudentServer, holdback: Holdback) -> None:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=120,
                                 headers={"Authorization": f"Bearer {server.token}"}) as client:
        response = await client.put("/admin/holdback", json=to_builtins(holdback))
        response.raise_for_status()
