"""Scenarios over one teacher: the same sampled traffic trained by 1, 2 and 4 scenarios' stream trainers (each
scenario lists no traffic source, so each takes every request), all reading the labeller's label log. The
figures a sampled request: teacher calls (Triton's own inference count) and teacher CPU (the CPU time of the
Triton server and its Python backend stub); the labeller's throughput alone; each scenario's freshness (served
-> published version) p50. The requests are written into a file sample log at a fixed rate while the labeller
and the trainers run (real Triton, real ONNX export and gate at each publication; the registry only)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import tempfile
import time
import uuid
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx
import msgspec
import numpy as np
import torch

from benchmarks.loadgen import tree_cpu_seconds
from benchmarks.results import Results, Row
from benchmarks.teacher_bench import _checkpoint
from distill_worker import (
    DistillConfig,
    GateConfig,
    StreamConfig,
    StreamHooks,
    TeacherClientSettings,
    WorkerSettings,
    labeller_main,
    stream_main,
)
from recdistill.core.contracts.labels import LabellerReport
from recdistill.core.contracts.records import SampledRequest, encode_record
from recdistill.core.contracts.worker import StandbyReport, StreamReport
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.prepare import prepare_source
from recdistill.core.data.sources import shipped_schema
from recdistill.core.samplelog import LogLocation, open_writer
from teacher_service import teacher_process

SECTION = "Scenarios: one teacher, a labeller, several students"
COMMAND = "make bench  # benchmarks/scenarios_bench.py"
SCENARIOS = (("home", "student"), ("related", "student_compact"), ("home_b", "student"),
             ("related_b", "student_compact"))
RATE = 80.0  # sampled requests a second


def _four_scenario_data(directory: Path) -> PreparedDataset:
    """MovieLens-100K with four scenarios, none listing traffic sources (each trains on every request)."""
    text = shipped_schema("ml-100k").read_text().split("[[scenarios]]")[0]
    text += "".join(f'[[scenarios]]\nname = "{name}"\ntask = "slate"\nview = "{view}"\n\n' for name, view in SCENARIOS)
    schema = directory / "schema.toml"
    schema.write_text(text)
    prepare_source("ml-100k", schema, directory / "data")
    return PreparedDataset(directory / "data")


def _bodies(dataset: PreparedDataset, count: int) -> list[bytes]:
    events = dataset.split("valid", "slate")[-count:]
    return [json.dumps(dataset.to_request(int(e), "slate", negatives=9)).encode() for e in events]


def _write_at_rate(samples: Path, bodies: list[bytes], rate: float) -> None:
    """Each body as a sampled request served now (a fresh id), at `rate` a second, like a server's sampler."""
    writer, _, lock = open_writer(LogLocation.parse(samples), "bench-server")
    scores, positions = SampledRequest.pack(np.full(10, 0.5), np.arange(10))
    start = time.perf_counter()
    for index, body in enumerate(bodies):
        time.sleep(max(0.0, start + index / rate - time.perf_counter()))
        now = time.time()
        request = json.loads(body) | {"request_id": uuid.uuid4().hex}
        writer.append([encode_record(SampledRequest(
            request_id=request["request_id"], ts=now, request_ts=now, model_version="bench", sampling_probability=1.0,
            request=json.dumps(request).encode(), scores=scores, positions=positions,
            scenario="home"))])
    writer.close()
    if lock is not None:
        lock.close()


def _inferences(metrics_url: str) -> tuple[float, float]:
    """(contexts scored, model executions) of the teacher so far: Triton's own counters."""
    text = httpx.get(f"http://{metrics_url}/metrics", timeout=10).text

    def counter(name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(f"{name}{{") and 'model="teacher"' in line)

    return counter("nv_inference_count"), counter("nv_inference_exec_count")


def _trainer(settings: WorkerSettings, ready: Event, done: Event, out: Queue) -> None:
    """One scenario's stream trainer in a process of its own, as `recdistill worker run --mode stream --scenario`
    runs it; its report back as msgpack."""
    def on_step(*_: object) -> None:
        ready.set()

    torch.set_num_threads(1)
    report, _ = asyncio.run(stream_main(settings, hooks=StreamHooks(until=done.is_set, on_step=on_step)))
    out.put(msgspec.msgpack.encode(report))


def _labeller(settings: WorkerSettings, ready: Event, done: Event, out: Queue) -> None:
    ready.set()
    out.put(msgspec.msgpack.encode(asyncio.run(labeller_main(settings, until=done.is_set))))


def _one_pass(base: WorkerSettings, work: Path, scenarios: int, bodies: list[bytes]) -> tuple[list[StreamReport],
                                                                                                float]:
    """The labeller and `scenarios` trainers, each in its own process, while the traffic is written (once every
    one is running); every report once drained, and the CPU seconds the processes used."""
    samples = work / "samples"
    base = base.model_copy(update={"sample_log": f"file:{samples}", "label_log": f"file:{work / 'labels'}",
                                   "registry": work / "registry", "state_dir": work / "state"})
    context = multiprocessing.get_context("spawn")
    done = context.Event()
    jobs = [(_trainer, base.model_copy(update={"scenario": name, "worker_id": name}))
            for name, _ in SCENARIOS[:scenarios]] + [(_labeller, base.model_copy(update={"worker_id": "labeller"}))]
    started = resource.getrusage(resource.RUSAGE_CHILDREN)
    running = []
    for target, settings in jobs:
        ready, out = context.Event(), context.Queue()
        process = context.Process(target=target, args=(settings, ready, done, out), daemon=True)
        process.start()
        running.append((process, ready, out))
    for process, ready, _ in running:
        while not ready.wait(1.0):
            if not process.is_alive():
                raise RuntimeError(f"a worker process exited with {process.exitcode} before it ran")
    _write_at_rate(samples, bodies, RATE)
    done.set()
    kinds = StreamReport | StandbyReport | LabellerReport
    *reports, labelled = [msgspec.msgpack.decode(out.get(timeout=600), type=kinds) for _, _, out in running]
    for process, _, _ in running:
        process.join(60)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not isinstance(labelled, LabellerReport) or not labelled.adds_up or labelled.labelled != len(bodies):
        raise RuntimeError(f"the labeller's counts do not add up to the {len(bodies)} requests: {labelled}")
    if not all(isinstance(r, StreamReport) for r in reports):
        raise RuntimeError(f"a trainer stayed a standby: {reports}")
    return reports, used.ru_utime + used.ru_stime - started.ru_utime - started.ru_stime  # type: ignore[return-value]


async def _labeller_alone(base: WorkerSettings, work: Path, bodies: list[bytes]) -> float:
    """Requests a second the labeller labels from a log that already holds them all."""
    samples = work / "samples"
    _write_at_rate(samples, bodies, 1e9)
    settings = base.model_copy(update={"sample_log": f"file:{samples}", "label_log": f"file:{work / 'labels'}",
                                       "state_dir": work / "state"})
    started = time.perf_counter()
    report = await labeller_main(settings, until=lambda: True)
    if report.labelled != len(bodies):
        raise RuntimeError(f"the labeller labelled {report.labelled} of {len(bodies)} requests: {report}")
    return len(bodies) / (time.perf_counter() - started)


def run(results: Results, quick: bool) -> None:
    requests = 120 if quick else 400
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset = _four_scenario_data(root)
        _checkpoint(dataset, root / "teacher")
        bodies = _bodies(dataset, requests)
        with teacher_process(root / "teacher", log_path=root / "triton.log") as (endpoints, process):
            base = WorkerSettings(
                data=dataset.directory, labels_from="labeller", max_holdout_events=300,
                teacher=TeacherClientSettings(url=endpoints.grpc_url, teacher_version="bench-medium-untrained"),
                distill=DistillConfig(epochs=1, patience=1),
                # The gate's quality and latency checks run at every publication (their cost is in the freshness)
                # but do not refuse: on 2 shared cores a busy ONNX Runtime p99 would, and this row is not about it.
                gate=GateConfig(auc_tolerance=1.0, holdout_events=300, latency_budget_ms=1e3),
                stream=StreamConfig(join_window_s=0.0, export_every=requests // 4, idle_s=0.1))
            throughput = asyncio.run(_labeller_alone(base, root / "alone", bodies))
            idle = _idle_cpu_rate(process.pid)
            per_request: dict[int, Pass] = {}
            for scenarios in (1, 4) if quick else (1, 2, 4):  # --quick: the smoke run skips the middle pass
                (calls, runs), started = _inferences(endpoints.metrics_url), time.time()
                cpu = tree_cpu_seconds(process.pid)
                reports, worker_cpu = _one_pass(base, root / f"k{scenarios}", scenarios, bodies)
                wall = time.time() - started
                busy = tree_cpu_seconds(process.pid) - cpu - idle * wall
                calls_after, runs_after = _inferences(endpoints.metrics_url)
                per_request[scenarios] = Pass(
                    (calls_after - calls) / requests, busy / requests * 1e3,
                    (calls_after - calls) / (runs_after - runs),
                    [r.freshness_s.p50 if r.freshness_s else float("nan") for r in reports], worker_cpu / wall)
    _rows(results, requests, throughput, per_request, idle)


@dataclass(frozen=True)
class Pass:
    calls: float  # teacher contexts a sampled request
    cpu_ms: float  # teacher CPU a sampled request
    batch: float  # contexts a teacher execution
    freshness_p50_s: list[float]  # each scenario's
    worker_cores: float  # CPU seconds a second of the labeller's and the trainers' processes


def _idle_cpu_rate(pid: int, seconds: float = 5.0) -> float:
    """CPU seconds a second the teacher's processes spend with no request (Triton's and the stub's own
    threads), subtracted from each pass in proportion to its length."""
    before = tree_cpu_seconds(pid)
    time.sleep(seconds)
    return (tree_cpu_seconds(pid) - before) / seconds


def _rows(results: Results, requests: int, throughput: float, passes: dict[int, Pass], idle: float) -> None:
    one, more = passes[1], [n for n in passes if n > 1]
    for scenarios in more:
        this = passes[scenarios]
        results.add(Row(SECTION, f"teacher calls a sampled request, {scenarios} scenarios vs 1", this.calls, "calls",
                        "1 scenario", one.calls, round(this.calls / one.calls, 3),
                        f"goal: flat within 10%; {requests} requests at {RATE:.0f}/s, each scenario's trainer takes "
                        "every one; Triton's nv_inference_count", COMMAND))
        results.add(Row(SECTION, f"teacher CPU a sampled request, {scenarios} scenarios vs 1", round(this.cpu_ms, 3),
                        "ms", "1 scenario", round(one.cpu_ms, 3), round(this.cpu_ms / one.cpu_ms, 3),
                        "goal: flat within 10%; CPU time of Triton's process tree over the pass, less its idle "
                        f"rate ({idle * 1e3:.1f} ms/s) times the pass's length, / requests; contexts a teacher "
                        f"execution: {this.batch:.1f} (1 scenario: {one.batch:.1f})", COMMAND))
    results.add(Row(SECTION, "labeller throughput (sampled requests labelled, alone)", round(throughput, 1),
                    "requests/s", note="a file sample log holding every request; 10 candidates each; the labeller "
                    "reads, asks the teacher once a request and appends the labels", command=COMMAND))
    base = one.freshness_p50_s[0]
    for scenarios in more:
        this = passes[scenarios]
        worst = max(this.freshness_p50_s)
        results.add(Row(SECTION, f"freshness p50, worst of {scenarios} scenarios vs 1", round(worst, 2), "s",
                        "1 scenario", round(base, 2), round(worst / base, 3),
                        "goal: each no worse than with 1; served -> published version (ONNX export and gate at "
                        f"every publication); every scenario's: {[round(v, 2) for v in this.freshness_p50_s]}; each "
                        f"trainer and the labeller a process; they kept {this.worker_cores:.2f} of the 2 cores busy (1 "
                        f"scenario: {one.worker_cores:.2f})",
                        COMMAND))
