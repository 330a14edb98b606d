"""Beyond one machine: what sampling every request costs the server with each sample-log backend, how fast
records travel from servers to the worker through Valkey, and batch training under torchrun (DDP)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.profile import describe, profile_under_load
from benchmarks.results import Results, Row
from benchmarks.samplelog_bench import _payloads
from benchmarks.student_bench import _load, _ours, _registry, request_body
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.samplelog import LogLocation, open_source, open_writer
from recdistill.demo.valkey import LocalValkey, local_valkey

SECTION = "Beyond one machine (Redis Streams on Valkey, DDP)"
COMMAND = "make bench  # benchmarks/scaleout_bench.py"
BIN = Path(sys.executable).parent


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` onto `cpus` (`sched_setaffinity` of a pid moves only its main thread)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


@contextmanager
def _server_alone(server_pid: int, broker_pid: int | None) -> Iterator[None]:
    """The server on CPU 0; the broker and the load generator (this process's children) on the others."""
    others = os.sched_getaffinity(0) - {0}
    before = os.sched_getaffinity(0)
    _pin(server_pid, {0})
    if broker_pid is not None:
        _pin(broker_pid, others)
    os.sched_setaffinity(0, others)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
        if broker_pid is not None:
            _pin(broker_pid, before)


def _server_cpu(results: Results, dataset: PreparedDataset, tmp: Path, valkey: LocalValkey, quick: bool) -> None:
    """Server CPU per HTTP ranking request (1 process), with every request sampled to each backend: on the
    shared cores (the broker and the load generator beside the server), then with the server alone on one core,
    so the broker's own work (Valkey: XADD, trimming, an fsync per write) is not charged to the server."""
    registry = tmp / "registry"
    _registry(dataset, registry)
    body = tmp / "request.json"
    body.write_bytes(request_body(dataset))
    seconds, repeats = (1.0, 1) if quick else (6.0, 3)
    measured, alone, profiles = {}, {}, {}
    can_pin = len(os.sched_getaffinity(0)) > 1 and 0 in os.sched_getaffinity(0)
    for name, log, rate in (("off", str(tmp / "samples-off"), "0"), ("file", str(tmp / "samples-file"), "1"),
                            ("redis", valkey.url, "1")):
        with _ours(registry, log, "--sampling-rate", rate) as (process, port, _):
            url = f"http://127.0.0.1:{port}/v1/rank"
            measured[name] = _load("http", url, body, seconds, repeats, process.pid)
            profiles[name] = profile_under_load(process.pid, seconds,
                                                lambda url=url, pid=process.pid: _load("http", url, body, seconds, 1,
                                                                                       pid))
            if can_pin:
                with _server_alone(process.pid, valkey.pid if name == "redis" else None):
                    alone[name] = _load("http", url, body, seconds, repeats, process.pid)
    for name in ("redis", "file"):
        run, off = measured[name], measured["off"]
        pinned = (f"with the server alone on CPU 0 (broker and load generator on the other core): "
                  f"{alone[name]['server_cpu_us']:.0f} vs {alone['off']['server_cpu_us']:.0f} us, "
                  f"{alone[name]['server_cpu_us'] / alone['off']['server_cpu_us']:.2f}x; ") if alone else ""
        results.add(Row(SECTION, f"server CPU per ranking request, every request sampled to the {name} log",
                        run["server_cpu_us"], "us", "sampling off", off["server_cpu_us"],
                        note=f"goal <= 1.15x; {run['throughput']:,.0f} vs {off['throughput']:,.0f} req/s; "
                             f"{run['errors']} errors; HTTP, 1 process, 16 connections; the writer gathers 10 ms of "
                             f"samples a write; {pinned}{describe(profiles[name])}", command=COMMAND))


def _transport(results: Results, dataset: PreparedDataset, tmp: Path, valkey_url: str, quick: bool) -> None:
    """Records per second from writers (batches of 100, as a busy server's sampler sends them) to the worker's
    reader, through Valkey (XADD, then XREADGROUP + sample-id marks + XACK) and through the file log."""
    payloads = _payloads(dataset, 500)
    total = 5_000 if quick else 100_000
    rates = {}
    for name, location in (("redis", LogLocation.parse(valkey_url)), ("file", LogLocation.parse(tmp / "transport"))):
        writer, _, lock = open_writer(location, "bench")
        source = open_source(location, "bench-worker")
        positions: dict = {}
        started, written, read = time.perf_counter(), 0, 0
        while read < total:
            if written < total:
                writer.append([payloads[(written + i) % len(payloads)] for i in range(100)])
                written += 100
            if written % 5_000 == 0 or written >= total:
                entries, _ = source.read(positions, 5_000)
                if not entries and written >= total:
                    raise RuntimeError(f"{name}: {total - read} records written but never read")
                for entry in entries:
                    positions[entry.partition] = entry.position
                source.commit(positions, [f"r{read + i}" for i in range(len(entries))])
                read += len(entries)
        rates[name] = total / (time.perf_counter() - started)
        writer.close()
        source.close()
        if lock is not None:
            lock.close()
    results.add(Row(SECTION, "sample records from servers to the worker through Valkey", rates["redis"],
                    "records/s", "the embedded file log, same records and batches", rates["file"],
                    note=f"{total:,} records (~{sum(map(len, payloads)) / len(payloads):,.0f} B each): XADD in "
                         "batches of 100, XREADGROUP 5,000 at a time, a sample-id mark and XACK per record; file: "
                         "fsync per batch", command=COMMAND))


def _ddp(results: Results, dataset: PreparedDataset, tmp: Path, quick: bool) -> None:
    """The batch phase (labels only, no teacher needed) in 1 process and under torchrun with 2 (gloo)."""
    epochs = "1" if quick else "6"
    # --quick: the most recent 5,000 training events (a smoke run of the same path; the figure means little).
    window = ["--max-train-events", "5000"] if quick else []
    reports = {}
    for processes in (1, 2):
        command = ["recdistill", "worker", "run", "--mode", "batch", "--no-teacher", "--data", str(dataset.directory),
                   "--registry", str(tmp / f"ddp-registry-{processes}"), "--state-dir", str(tmp / f"ddp-{processes}"),
                   "--epochs", epochs, *window]
        (tmp / f"ddp-registry-{processes}").mkdir()
        dataset.schema.save(tmp / f"ddp-registry-{processes}" / "features.json")
        if processes > 1:
            command = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", str(processes), "--no-python",
                       *command]
        env = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}", "WORKER_DISTILL__PATIENCE": "100",
                            "WORKER_GATE__AUC_TOLERANCE": "1.0"}
        done = subprocess.run(command, capture_output=True, text=True, timeout=1_200, env=env, check=True)
        decoder, text, found = json.JSONDecoder(), done.stdout, []
        while "{" in text:
            report, end = decoder.raw_decode(text[text.index("{"):])
            found.append(report)
            text = text[text.index("{") + end:]
        reports[processes] = next(r for r in found if r.get("rank") == 0)
    one, two = reports[1], reports[2]
    results.add(Row(SECTION, "batch training throughput, torchrun DDP with 2 processes (gloo)",
                    two["train_examples_per_s"], "examples/s", "1 process (2 threads)", one["train_examples_per_s"],
                    note=f"slate, {'5,000 events' if quick else 'whole training window'}, {epochs} epoch(s), "
                         f"labels only; test AUC {two['test']['auc']:.4f} (2 processes) vs {one['test']['auc']:.4f} "
                         "(1 process), seed noise here 0.002-0.004", command=COMMAND))


def _freshness(results: Results, demo_report: Path) -> None:
    """Freshness is measured where real traffic is served, trained and hot-swapped: the demo's live stage."""
    if not demo_report.is_file():
        logging.getLogger(__name__).info("no demo report at %s: no freshness row", demo_report)
        return
    report = json.loads(demo_report.read_text())
    freshness = ((report.get("serving") or {}).get("stream") or {}).get("freshness_s")
    if not freshness:
        return
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(demo_report.stat().st_mtime))
    results.add(Row(SECTION, "freshness: a served request to the first live version trained on it, p50",
                    freshness["p50"], "s", note=f"p95 {freshness['p95']} s over {freshness['requests']:,} requests; "
                    f"from the demo's streaming stage ({demo_report}, {when}), not this run",
                    command="make demo"))


def run(results: Results, dataset: PreparedDataset, quick: bool, demo_report: Path | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="scaleout-bench-") as name:
        tmp = Path(name)
        with local_valkey(tmp / "valkey") as valkey:
            _server_cpu(results, dataset, tmp, valkey, quick)
            _transport(results, dataset, tmp, valkey.url, quick)
        _ddp(results, dataset, tmp, quick)
    _freshness(results, demo_report or Path(__file__).parents[1] / "runs" / "demo" / "report.json")
