"""A closed-loop load generator, run in its own process: N concurrent connections send the same
pre-serialised request for a fixed time and stop by themselves.

    python -m benchmarks.loadgen http --target http://127.0.0.1:8080/v1/rank --body FILE [--header 'K: V']
    python -m benchmarks.loadgen grpc --target 127.0.0.1:50051 --method /pkg.Service/Method --body FILE

It shares the machine's two cores with the server under test, so it is kept lean: HTTP is a bare
HTTP/1.1 keep-alive client on uvloop (~20 us of CPU a request), gRPC sends raw bytes through
grpcio (no protobuf work per call; grpcio itself costs ~100 us a call). Every server of one
protocol is measured with the same client. Prints one JSON line: requests, errors, seconds,
throughput, p50_ms, p99_ms, client_cpu_us (this process's CPU per request) and, with --server-pid,
server_cpu_us (the CPU of that process and all its descendants per request, e.g. Triton's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np


class _Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0


class _HttpConnection(asyncio.Protocol):
    """One keep-alive connection that sends the request again as soon as a whole response is in."""

    def __init__(self, request: bytes, deadline: float, stats: _Stats, done: asyncio.Future) -> None:
        self.request, self.deadline, self.stats, self.done = request, deadline, stats, done
        self.buffer = bytearray()
        self.started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        self.started = time.perf_counter()
        self.transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(self.buffer[:head_end]).lower()
        length = _content_length(head)
        if len(self.buffer) < head_end + 4 + length:
            return
        del self.buffer[: head_end + 4 + length]
        now = time.perf_counter()
        self.stats.latencies.append(now - self.started)
        if not head.startswith(b"http/1.1 200"):
            self.stats.errors += 1
        if now < self.deadline:
            self._send()
        else:
            self.transport.close()  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"content-length":
            return int(value)
    raise ValueError("the benchmark client needs responses with a content-length")


async def _http(args: argparse.Namespace, body: bytes, seconds: float) -> _Stats:
    url = urlsplit(args.target)
    headers = [f"Host: {url.netloc}", f"Content-Type: {args.content_type}", f"Content-Length: {len(body)}",
               *args.header]
    request = f"POST {url.path} HTTP/1.1\r\n{''.join(h + chr(13) + chr(10) for h in headers)}\r\n".encode() + body
    loop = asyncio.get_running_loop()
    stats, deadline = _Stats(), time.perf_counter() + seconds
    done = [loop.create_future() for _ in range(args.concurrency)]
    for future in done:
        await loop.create_connection(lambda f=future: _HttpConnection(request, deadline, stats, f),
                                     url.hostname, url.port)
    await asyncio.gather(*done)
    return stats


async def _grpc(args: argparse.Namespace, body: bytes, seconds: float) -> _Stats:
    import grpc

    stats, deadline = _Stats(), time.perf_counter() + seconds
    # Separate connections (a local subchannel pool each), so several server processes share the load.
    channels = [grpc.aio.insecure_channel(args.target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(args.connections)]
    calls = [channel.unary_unary(args.method) for channel in channels]

    async def client(call: grpc.aio.UnaryUnaryMultiCallable) -> None:
        while (started := time.perf_counter()) < deadline:
            try:
                await call(body)
            except grpc.aio.AioRpcError:
                stats.errors += 1
            stats.latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(client(calls[i % len(calls)]) for i in range(args.concurrency)))
    for channel in channels:
        await channel.close()
    return stats


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and every descendant (user + system)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def main() -> None:
    import uvloop

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("protocol", choices=["http", "grpc"])
    parser.add_argument("--target", required=True, help="URL (http) or host:port (grpc)")
    parser.add_argument("--body", type=Path, required=True, help="the request bytes, sent as they are")
    parser.add_argument("--method", default="/recdistill.v2.Ranking/Rank", help="gRPC method path")
    parser.add_argument("--header", action="append", default=[], help="extra HTTP header 'Name: value'")
    parser.add_argument("--content-type", default="application/json")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--connections", type=int, help="gRPC connections the calls spread over (default: one per "
                        "concurrent call, as HTTP has)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--server-pid", type=int, help="also report this process tree's CPU per request")
    args = parser.parse_args()
    args.connections = args.connections or args.concurrency
    body = args.body.read_bytes()
    run = _http if args.protocol == "http" else _grpc
    uvloop.install()
    asyncio.run(run(args, body, args.warmup))
    server_started = tree_cpu_seconds(args.server_pid) if args.server_pid else 0.0
    cpu_started, started = time.process_time(), time.perf_counter()
    stats = asyncio.run(run(args, body, args.seconds))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    values = np.asarray(stats.latencies) * 1e3
    result = {"requests": len(values), "errors": stats.errors, "seconds": elapsed,
              "throughput": len(values) / elapsed, "p50_ms": float(np.percentile(values, 50)),
              "p99_ms": float(np.percentile(values, 99)), "client_cpu_us": cpu / len(values) * 1e6}
    if args.server_pid:
        result["server_cpu_us"] = (tree_cpu_seconds(args.server_pid) - server_started) / len(values) * 1e6
    print(json.dumps(result))  # noqa: T201


if __name__ == "__main__":
    main()
