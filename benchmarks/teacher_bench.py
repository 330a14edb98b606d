"""Teacher: labelling throughput through Triton gRPC vs the same model in-process, and latency by history length,
with Triton's own breakdown of a request (queue, input, model, output; from its metrics endpoint). Each client
thread keeps one channel open, as the worker's client does."""

from __future__ import annotations

import ctypes
import ctypes.util
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import orjson
import torch
import tritonclient.grpc as grpcclient

from benchmarks.results import Results, Row, percentiles_ms
from recdistill.core.contracts.teacher import TEACHER_OUTPUT, TeacherDataWindow, TeacherManifest, infer_inputs
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.synthetic import synthetic_requests
from recdistill.core.features.encoder import Encoder
from teacher_service import ALLOCATOR_THRESHOLD, TEACHER_SIZES, TeacherModel, save_checkpoint, teacher_process

SECTION = "Teacher (Triton gRPC vs in-process)"
COMMAND = "make bench  # benchmarks/teacher_bench.py"
GOALS = {100: "goal p50 <= 2 ms; ", 20_000: "goal <= 1.20x; "}
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)


def _checkpoint(dataset: PreparedDataset, directory: Path) -> TeacherModel:
    """A medium-size teacher with untrained weights: speed does not depend on what it learnt."""
    torch.manual_seed(0)
    model = TeacherModel(dataset.schema, TEACHER_SIZES["medium"]).eval()
    save_checkpoint(directory, model, dataset.schema, TeacherManifest(
        teacher_version="bench-medium-untrained", task="slate", size="medium", config=model.config.to_dict(),
        parameters=sum(p.numel() for p in model.parameters()), schema_hash=dataset.schema.hash,
        dataset=dataset.manifest.dataset,
        data_window=TeacherDataWindow(train_start_ts=0, train_end_ts=0, train_events=0), train={}, best_epoch=0,
        history=[], valid={}, test={}, seconds=0.0))
    return model


def _timed(fn, inputs: list) -> list[float]:  # noqa: ANN001
    seconds = []
    for item in inputs:
        start = time.perf_counter()
        fn(item)
        seconds.append(time.perf_counter() - start)
    return seconds


def _same_allocator() -> None:
    """The in-process reference with the glibc settings `teacher serve` gives Triton's processes (large blocks
    kept on the heap), so the two sides differ only by Triton."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallopt(M_MMAP_THRESHOLD, ALLOCATOR_THRESHOLD)
    libc.mallopt(M_TRIM_THRESHOLD, ALLOCATOR_THRESHOLD)


def run(results: Results, dataset: PreparedDataset, quick: bool) -> None:
    torch.set_num_threads(2)
    _same_allocator()
    encoder = Encoder(dataset.schema, "teacher")
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(8 if quick else 24):
        events = rng.choice(dataset.split("test"), 64, replace=False)
        batches.append(encoder.assemble(dataset.contexts(encoder, events, "slate"))[0])
    candidates = sum(b["cand_item"].size for b in batches)
    rounds = 2 if quick else 6
    lengths = (100, 1_000, 20_000)
    per_length = {n: [encoder.encode_requests([dataset.schema.parse_request(orjson.dumps(body))])[0]
                      for body in synthetic_requests(dataset.schema, 5 if quick and n == 20_000 else 20, n, 100,
                                                     seed=n)]
                  for n in lengths}

    with tempfile.TemporaryDirectory() as tmp:
        model = _checkpoint(dataset, Path(tmp) / "teacher")

        def in_process(tensors: dict[str, np.ndarray]) -> np.ndarray:
            with torch.inference_mode():
                return model(**{k: torch.from_numpy(v) for k, v in tensors.items()}).numpy()

        in_process(batches[0])  # warm-up

        with teacher_process(Path(tmp) / "teacher", log_path=Path(tmp) / "triton.log") as (endpoints, _):
            channels = threading.local()

            def remote(tensors: dict[str, np.ndarray]) -> np.ndarray:
                if not hasattr(channels, "client"):
                    channels.client = grpcclient.InferenceServerClient(endpoints.grpc_url)
                return channels.client.infer(endpoints.model_name, infer_inputs(tensors, grpcclient), outputs=[
                    grpcclient.InferRequestedOutput(TEACHER_OUTPUT)]).as_numpy(TEACHER_OUTPUT)

            remote(batches[0])  # warm-up
            # Rounds alternate in-process, 1 client, 4 clients, so a slow spell of the shared machine falls on
            # all three; the rates are each side's total over every round.
            local_s = triton_s = triton_concurrent_s = 0.0
            labelling = {}
            with ThreadPoolExecutor(4) as pool:
                for _ in range(rounds):
                    local_s += sum(_timed(in_process, batches))
                    before = _triton_durations(endpoints.metrics_url)
                    triton_s += sum(_timed(remote, batches))
                    after = _triton_durations(endpoints.metrics_url)
                    for k in after:
                        labelling[k] = labelling.get(k, 0.0) + (after[k] - before.get(k, 0.0)) / 1e3
                    start = time.perf_counter()
                    list(pool.map(remote, batches))
                    triton_concurrent_s += time.perf_counter() - start
            # Latency side by side too: each request in-process, then through Triton, one after the other.
            triton_latency, local_latency, breakdown = {}, {}, {}
            for n, requests in per_length.items():
                in_process(requests[0]), remote(requests[0])  # this shape's warm-up
                before = _triton_durations(endpoints.metrics_url)
                local_latency[n], triton_latency[n] = [], []
                for request in requests:
                    local_latency[n] += _timed(in_process, [request])
                    triton_latency[n] += _timed(remote, [request])
                after = _triton_durations(endpoints.metrics_url)
                breakdown[n] = {k: (after[k] - before.get(k, 0.0)) / len(requests) / 1e3 for k in after}

    local_rate = candidates * rounds / local_s
    calls = len(batches) * rounds
    results.add(Row(SECTION, "labelling throughput, Triton gRPC, 1 client (64 slates x 21 candidates a call)",
                    candidates * rounds / triton_s, "candidates/s", "same model in-process", local_rate,
                    note=f"a call: {triton_s / calls * 1e3:.1f} ms through Triton, {local_s / calls * 1e3:.1f} ms "
                         f"in-process; Triton's mean: queue {labelling['queue'] / calls:.2f} ms, input "
                         f"{labelling['compute_input'] / calls:.2f} ms, model {labelling['compute_infer'] / calls:.2f}"
                         f" ms, output {labelling['compute_output'] / calls:.2f} ms", command=COMMAND))
    results.add(Row(SECTION, "labelling throughput, Triton gRPC, 4 concurrent clients",
                    candidates * rounds / triton_concurrent_s, "candidates/s", "same model in-process", local_rate,
                    note="goal >= 0.80x", command=COMMAND))
    for n in lengths:
        t50, t99 = percentiles_ms(triton_latency[n])
        l50, l99 = percentiles_ms(local_latency[n])
        parts = breakdown[n]
        results.add(Row(SECTION, f"latency p50, history {n:,}, 100 candidates", t50, "ms", "in-process p50", l50,
                        note=f"{GOALS.get(n, '')}p99 {t99:.1f} ms vs {l99:.1f} ms in-process; "
                             f"{len(triton_latency[n])} requests; "
                             f"Triton's mean a request: queue {parts['queue']:.2f} ms, input "
                             f"{parts['compute_input']:.2f} ms, model (validation and scoring in the Python "
                             f"backend) {parts['compute_infer']:.2f} ms, output {parts['compute_output']:.2f} ms; "
                             f"the rest is the gRPC client and transport", command=COMMAND))


def _triton_durations(metrics_url: str) -> dict[str, float]:
    """Triton's cumulative per-stage microseconds (nv_inference_*_duration_us) from its metrics endpoint."""
    totals: dict[str, float] = {}
    for line in httpx.get(f"http://{metrics_url}/metrics", timeout=10).text.splitlines():
        if line.startswith("nv_inference_") and "_duration_us" in line:
            name, value = line.rsplit(" ", 1)
            stage = name.split("{")[0].removeprefix("nv_inference_").removesuffix("_duration_us")
            totals[stage] = totals.get(stage, 0.0) + float(value)
    return totals
