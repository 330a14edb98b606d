"""A closed-loop load generator, run in its own process: N concurrent clients send the same request
for a fixed time. `python -m benchmarks.loadgen --kind http|grpc|triton --target ... --body FILE`.
Prints one JSON line: requests, errors, seconds, throughput, p50_ms, p99_ms."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import numpy as np


async def _http(target: str, body: bytes, concurrency: int, seconds: float) -> tuple[list[float], int]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                async with session.post(target, data=body, headers={"content-type": "application/json"}) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - start)
        await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, errors


async def _grpc(target: str, body: bytes, concurrency: int, seconds: float) -> tuple[list[float], int]:
    import grpc

    from recdistill._proto import ranking_pb2, ranking_pb2_grpc

    request = ranking_pb2.RankRequest()
    request.ParseFromString(body)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ranking_pb2_grpc.RankingStub(channel)

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    await stub.Rank(request)
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append(time.perf_counter() - start)
        await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, errors


async def _triton(target: str, body: bytes, concurrency: int, seconds: float) -> tuple[list[float], int]:
    import tritonclient.grpc.aio as aioclient

    from teacher_service.client import infer_inputs

    arrays = np.load(__import__("io").BytesIO(body))
    tensors = {name: arrays[name] for name in arrays.files}
    inputs = infer_inputs(tensors, aioclient)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    client_ = aioclient.InferenceServerClient(target)

    async def client() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                await client_.infer("student", inputs)
            except Exception:  # noqa: BLE001
                errors += 1
            latencies.append(time.perf_counter() - start)
    await asyncio.gather(*(client() for _ in range(concurrency)))
    await client_.close()
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["http", "grpc", "triton"], required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    body = args.body.read_bytes()
    run = {"http": _http, "grpc": _grpc, "triton": _triton}[args.kind]
    asyncio.run(run(args.target, body, args.concurrency, args.warmup))
    started = time.perf_counter()
    latencies, errors = asyncio.run(run(args.target, body, args.concurrency, args.seconds))
    elapsed = time.perf_counter() - started
    values = np.asarray(latencies) * 1e3
    print(json.dumps({"requests": len(latencies), "errors": errors, "seconds": elapsed,  # noqa: T201
                      "throughput": len(latencies) / elapsed, "p50_ms": float(np.percentile(values, 50)),
                      "p99_ms": float(np.percentile(values, 99))}))


if __name__ == "__main__":
    main()
