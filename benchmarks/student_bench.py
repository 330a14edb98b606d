"""Student server: HTTP and gRPC throughput and latency (100 candidates, 16 concurrent connections,
load generator in its own process on the same machine) against raw in-process ONNX Runtime, a plain
FastAPI + pydantic endpoint and Triton (PyTriton) serving the same ONNX model; p99 during swaps;
server RSS under load."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import numpy as np
import psutil
import torch

from benchmarks.results import Results, Row, percentiles_ms
from distill_worker.export import publish_student
from distill_worker.student import StudentConfig, StudentModel
from recdistill.artifact import write_state
from recdistill.data.dataset import PreparedDataset
from recdistill.features.encoder import Encoder
from recdistill.features.request import parse_rank_request
from recdistill.processes import child_process, free_port
from student_server.grpc_service import request_from_dict
from student_server.scoring import session_options

SECTION = "Student server (100 candidates, 16 connections)"
COMMAND = "make bench  # benchmarks/student_bench.py"
ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "rank_request.json"
TOKEN = "bench-token"


def _registry(dataset: PreparedDataset, root: Path) -> dict[str, np.ndarray]:
    dataset.schema.save(root / "features.json")
    encoder = Encoder(dataset.schema, "student")
    probe, _ = encoder.assemble(dataset.contexts(encoder, dataset.split("test")[:32], "slate"))
    for seed in (1, 2):
        torch.manual_seed(seed)
        publish_student(root, f"v{seed}", StudentModel(dataset.schema, StudentConfig()).eval(), dataset.schema,
                        probe, {"teacher_version": None})
    write_state(root, {"active": "v1", "history": []})
    tensors, _ = encoder.encode_requests([parse_rank_request(EXAMPLE.read_bytes())])
    return tensors


def _process(command: list[str], ready_url: str, env: dict[str, str] | None = None
             ) -> AbstractContextManager[subprocess.Popen]:
    return child_process(command, lambda: httpx.get(ready_url, timeout=1).status_code == 200, " ".join(command[:4]),
                         env=env, stop_timeout_s=30)


def _load(kind: str, target: str, body: Path, seconds: float) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.loadgen", "--kind", kind, "--target", target,
                          "--body", str(body), "--seconds", str(seconds), "--concurrency", "16"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _raw_onnx(registry: Path, tensors: dict[str, np.ndarray], runs: int) -> dict[str, float]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(registry / "v1" / "model.onnx"), session_options(1),
                                   providers=["CPUExecutionProvider"])
    for _ in range(50):
        session.run(None, tensors)
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, tensors)
        seconds.append(time.perf_counter() - start)
    p50, p99 = percentiles_ms(seconds)
    return {"throughput": runs / sum(seconds), "p50_ms": p50, "p99_ms": p99}


def run(results: Results, dataset: PreparedDataset, quick: bool) -> None:
    seconds = 4.0 if quick else 10.0
    recdistill = str(Path(sys.executable).parent / "recdistill")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        registry = tmp / "registry"
        tensors = _registry(dataset, registry)
        json_body = tmp / "request.json"
        json_body.write_bytes(EXAMPLE.read_bytes())
        proto_body = tmp / "request.pb"
        proto_body.write_bytes(request_from_dict(json.loads(EXAMPLE.read_text())).SerializeToString())
        npz = io.BytesIO()
        np.savez(npz, **tensors)
        tensor_body = tmp / "request.npz"
        tensor_body.write_bytes(npz.getvalue())

        raw = _raw_onnx(registry, tensors, 500 if quick else 3_000)
        port, grpc_port = free_port(), free_port()
        ours_cmd = [recdistill, "student", "serve", "--registry", str(registry), "--port", str(port),
                    "--grpc-port", str(grpc_port), "--sample-log", str(tmp / "samples")]
        with _process(ours_cmd, f"http://127.0.0.1:{port}/readyz", {"RECDISTILL_ADMIN_TOKEN": TOKEN}) as server:
            http = _load("http", f"http://127.0.0.1:{port}/v1/rank", json_body, seconds)
            grpc = _load("grpc", f"127.0.0.1:{grpc_port}", proto_body, seconds)
            rss_under_load = psutil.Process(server.pid).memory_info().rss / 2**20
            swapping = _during_swaps(port, json_body, seconds)
        # One process per core: the layout the issue asks for (the load generator shares the cores).
        port2, grpc_port2 = free_port(), free_port()
        two_cmd = [recdistill, "student", "serve", "--registry", str(registry), "--port", str(port2),
                   "--grpc-port", str(grpc_port2), "--sample-log", str(tmp / "samples2"), "--workers", "2"]
        with _process(two_cmd, f"http://127.0.0.1:{port2}/readyz", {"RECDISTILL_ADMIN_TOKEN": TOKEN}):
            http_two = _load("http", f"http://127.0.0.1:{port2}/v1/rank", json_body, seconds)
            grpc_two = _load("grpc", f"127.0.0.1:{grpc_port2}", proto_body, seconds)
        plain_port = free_port()
        plain_cmd = [sys.executable, "-m", "benchmarks.references", "plain", "--registry", str(registry),
                     "--version", "v1", "--port", str(plain_port)]
        with _process(plain_cmd, f"http://127.0.0.1:{plain_port}/readyz"):
            plain = _load("http", f"http://127.0.0.1:{plain_port}/v1/rank", json_body, seconds)
        t_grpc, t_http, t_metrics = free_port(), free_port(), free_port()
        triton_cmd = [sys.executable, "-m", "benchmarks.references", "triton", "--registry", str(registry),
                      "--version", "v1", "--port", str(t_grpc), "--http-port", str(t_http),
                      "--metrics-port", str(t_metrics)]
        with _process(triton_cmd, f"http://127.0.0.1:{t_http}/v2/models/student/ready"):
            triton = _load("triton", f"127.0.0.1:{t_grpc}", tensor_body, seconds)

    def add(name: str, value: float, unit: str, reference: str, reference_value: float, note: str = "") -> None:
        results.add(Row(SECTION, name, value, unit, reference, reference_value, note=note, command=COMMAND))

    note = "req/s; p50 {:.2f} ms, p99 {:.2f} ms, {} errors"
    add("HTTP throughput (POST /v1/rank JSON)", http["throughput"], "req/s", "plain FastAPI + pydantic",
        plain["throughput"], note.format(http["p50_ms"], http["p99_ms"], int(http["errors"])))
    add("HTTP throughput vs Triton (PyTriton) serving the same ONNX", http["throughput"], "req/s",
        "Triton gRPC, pre-encoded tensors", triton["throughput"],
        note.format(triton["p50_ms"], triton["p99_ms"], int(triton["errors"])) + " (Triton)")
    add("gRPC throughput (Rank)", grpc["throughput"], "req/s", "our HTTP", http["throughput"],
        note.format(grpc["p50_ms"], grpc["p99_ms"], int(grpc["errors"])))
    add("gRPC throughput vs plain FastAPI", grpc["throughput"], "req/s", "plain FastAPI + pydantic",
        plain["throughput"], note.format(plain["p50_ms"], plain["p99_ms"], int(plain["errors"])) + " (plain)")
    add("HTTP throughput, 2 server processes", http_two["throughput"], "req/s", "plain FastAPI + pydantic",
        plain["throughput"], note.format(http_two["p50_ms"], http_two["p99_ms"], int(http_two["errors"])))
    add("gRPC throughput, 2 server processes", grpc_two["throughput"], "req/s", "Triton gRPC, pre-encoded tensors",
        triton["throughput"], note.format(grpc_two["p50_ms"], grpc_two["p99_ms"], int(grpc_two["errors"])))
    add("HTTP p99 latency", http["p99_ms"], "ms", "plain FastAPI p99", plain["p99_ms"])
    add("raw in-process ONNX Runtime (the limit), 1 thread, same request", raw["throughput"], "req/s",
        "our HTTP", http["throughput"], f"p50 {raw['p50_ms']:.3f} ms, p99 {raw['p99_ms']:.3f} ms")
    add("HTTP p99 while a swap happens every 0.5 s", swapping["p99_ms"], "ms", "steady-state HTTP p99",
        http["p99_ms"], f"{int(swapping['swaps'])} swaps, {int(swapping['errors'])} errors")
    results.add(Row(SECTION, "server RSS after the load runs", rss_under_load, "MiB", command=COMMAND))


def _during_swaps(port: int, body: Path, seconds: float) -> dict[str, float]:
    stop = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=30) as client:
            while not stop.wait(0.5):
                version = "v2" if swaps % 2 == 0 else "v1"
                client.post(f"/admin/versions/{version}/activate").raise_for_status()
                swaps += 1

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        result = _load("http", f"http://127.0.0.1:{port}/v1/rank", body, seconds)
    finally:
        stop.set()
        thread.join()
    return result | {"swaps": swaps}
