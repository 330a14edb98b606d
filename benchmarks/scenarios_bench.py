"""Scenarios over one teacher: the same sampled traffic trained by 1, 2 and 4 scenarios' stream trainers (each
scenario lists no traffic source, so each takes every request), all reading the labeller's label log. The
figures a sampled request: teacher calls (Triton's own inference count) and teacher CPU (the CPU time of the
Triton server and its Python backend stub); the labeller's throughput alone; each scenario's freshness (served
-> published version) p50. The requests are written into a file sample log at a fixed rate while the labeller
and the trainers run (real Triton, real ONNX export and gate at each publication; the registry only)."""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import psutil

from benchmarks.results import Results, Row
from benchmarks.teacher_bench import _checkpoint
from distill_worker.labeller import labeller_main
from distill_worker.settings import DistillConfig, GateConfig, StreamConfig, TeacherClientSettings, WorkerSettings
from distill_worker.stream import StreamHooks, stream_main
from recdistill.core.contracts.records import SampledRequest, encode_record
from recdistill.core.contracts.worker import StreamReport
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.prepare import prepare_source
from recdistill.core.data.sources import shipped_schema
from recdistill.core.samplelog import LogLocation, open_writer
from teacher_service.launcher import teacher_process

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


def _write_at_rate(samples: Path, bodies: list[bytes], rate: float, done: threading.Event) -> None:
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
            request=json.dumps(request).encode(), student_view="student", scores=scores, positions=positions,
            scenario="home"))])
    writer.close()
    if lock is not None:
        lock.close()
    done.set()


def _inferences(metrics_url: str) -> float:
    text = httpx.get(f"http://{metrics_url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("nv_inference_count{") and 'model="teacher"' in line)


def _cpu_seconds(pid: int) -> float:
    """CPU time of the teacher's whole process tree (launcher, Triton, the Python backend stub)."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


async def _one_pass(dataset: PreparedDataset, base: WorkerSettings, work: Path, scenarios: int,
                    bodies: list[bytes]) -> list[StreamReport]:
    """The labeller and `scenarios` trainers while the traffic is written; every report once drained."""
    samples = work / "samples"
    base = base.model_copy(update={"sample_log": f"file:{samples}", "label_log": f"file:{work / 'labels'}",
                                   "registry": work / "registry", "state_dir": work / "state"})
    done = threading.Event()
    writer = threading.Thread(target=_write_at_rate, args=(samples, bodies, RATE, done), daemon=True)
    writer.start()

    async def trainer(name: str) -> StreamReport:
        report, _ = await stream_main(base.model_copy(update={"scenario": name}), hooks=StreamHooks(until=done.is_set))
        if not isinstance(report, StreamReport):
            raise RuntimeError(f"scenario {name}'s trainer stayed a standby: {report}")
        return report

    *reports, labelled = await asyncio.gather(*(trainer(name) for name, _ in SCENARIOS[:scenarios]),
                                              labeller_main(base, until=done.is_set))
    writer.join()
    if not labelled.adds_up or labelled.labelled != len(bodies):
        raise RuntimeError(f"the labeller's counts do not add up to the {len(bodies)} requests: {labelled}")
    return reports


async def _labeller_alone(base: WorkerSettings, work: Path, bodies: list[bytes]) -> float:
    """Requests a second the labeller labels from a log that already holds them all."""
    samples = work / "samples"
    _write_at_rate(samples, bodies, 1e9, threading.Event())
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
                distill=DistillConfig(epochs=1, patience=1), gate=GateConfig(auc_tolerance=1.0, holdout_events=300),
                stream=StreamConfig(join_window_s=0.0, export_every=requests // 4, idle_s=0.1))
            throughput = asyncio.run(_labeller_alone(base, root / "alone", bodies))
            per_request: dict[int, tuple[float, float]] = {}
            freshness: dict[int, list[float]] = {}
            for scenarios in (1, 2, 4):
                calls, cpu = _inferences(endpoints.metrics_url), _cpu_seconds(process.pid)
                reports = asyncio.run(_one_pass(dataset, base, root / f"k{scenarios}", scenarios, bodies))
                per_request[scenarios] = ((_inferences(endpoints.metrics_url) - calls) / requests,
                                          (_cpu_seconds(process.pid) - cpu) / requests * 1e3)
                freshness[scenarios] = [r.freshness_s.p50 if r.freshness_s else float("nan") for r in reports]
    _rows(results, requests, throughput, per_request, freshness)


def _rows(results: Results, requests: int, throughput: float, per_request: dict[int, tuple[float, float]],
          freshness: dict[int, list[float]]) -> None:
    calls_1, cpu_1 = per_request[1]
    for scenarios in (2, 4):
        calls, cpu = per_request[scenarios]
        results.add(Row(SECTION, f"teacher calls a sampled request, {scenarios} scenarios vs 1", calls, "calls",
                        "1 scenario", calls_1, round(calls / calls_1, 3),
                        f"goal: flat within 10%; {requests} requests at {RATE:.0f}/s, each scenario's trainer takes "
                        "every one; Triton's nv_inference_count", COMMAND))
        results.add(Row(SECTION, f"teacher CPU a sampled request, {scenarios} scenarios vs 1", round(cpu, 3), "ms",
                        "1 scenario", round(cpu_1, 3), round(cpu / cpu_1, 3),
                        "goal: flat within 10%; CPU time of Triton's process tree over the pass / requests", COMMAND))
    results.add(Row(SECTION, "labeller throughput (sampled requests labelled, alone)", round(throughput, 1),
                    "requests/s", note="a file sample log holding every request; 10 candidates each; the labeller "
                    "reads, asks the teacher once a request and appends the labels", command=COMMAND))
    base = freshness[1][0]
    for scenarios in (2, 4):
        worst = max(freshness[scenarios])
        results.add(Row(SECTION, f"freshness p50, worst of {scenarios} scenarios vs 1", round(worst, 2), "s",
                        "1 scenario", round(base, 2), round(worst / base, 3),
                        "goal: each no worse than with 1; served -> published version (ONNX export and gate on "
                        f"every publication); all scenarios: {[round(v, 2) for v in freshness[scenarios]]}",
                        COMMAND))
