"""Replay a window of the timeline as live traffic: ranking requests over HTTP and gRPC (alternating),
open-loop at a fixed rate, and clicks posted as feedback after a delay.

Clicks follow a position-based model: the user sees the top `exposed_positions` of the served ranking
and examines position p (0-based) with probability 1 / log2(p + 2); the real next item is clicked
when it is shown and examined. Nothing else is clicked, and nothing below the fold ever is.

Each request may carry a traffic source (the `x-traffic-source` header, or gRPC metadata) that the
demo derives from a variable no model reads (see `demo.logging_policy`); the server's sampling rules
read it, which biases the sample log in a way only inverse-propensity weights can undo.

The replay is another party (the service's clients): it runs in its own process, so it neither shares
an interpreter lock with the training worker nor is slowed down by it beyond the machine's cores.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import random
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import grpc
import httpx

from recdistill.core._proto import ranking_v3_pb2, ranking_v3_pb2_grpc
from recdistill.core.contracts.rank_v3 import columns_from_dict
from recdistill.core.data.dataset import PreparedDataset
from student_server import StudentSettings

SOURCE_HEADER = StudentSettings.model_fields["traffic_source_header"].default  # what the server reads


@dataclass(frozen=True)
class ReplayPlan:
    data_dir: Path
    event_ids: list[int]
    http_url: str
    grpc_target: str
    rate: float
    concurrency: int
    feedback_delay_s: float
    exposed_positions: int
    out_path: Path  # one JSON line per request: what the client saw
    traffic_sources: dict[int, str] = field(default_factory=dict)  # event id -> source header (hidden variable)
    scenarios: dict[int, str] = field(default_factory=dict)  # event id -> a scenario beside the first (its route)


@dataclass(frozen=True)
class Served:
    sent_s: float  # since the replay started
    latency_ms: float
    protocol: str
    version: str | None
    error: str | None = None
    real_item_rank: int | None = None  # where the served ranking put the item the user chose
    clicked: bool = False
    event_id: int = -1
    user_id: str = ""
    policy: str = "model"  # what the server said: "model", or "random" (its exploration slice)
    traffic_source: str | None = None
    candidates: int = 0
    exposed: list[int] = field(default_factory=list)  # candidate indices (request order) shown, best first
    scenario: str | None = None  # the scenario it was sent to (None: the first, `/v1/rank`)


class ReplayProcess:
    """Start the replay in a child process; watch its progress; read what it recorded."""

    def __init__(self, plan: ReplayPlan) -> None:
        context = multiprocessing.get_context("spawn")
        self.plan = plan
        self.sent: Synchronized = context.Value("i", 0)  # type: ignore[assignment]
        self.started_unix: Synchronized = context.Value("d", 0.0)  # type: ignore[assignment]
        self.process = context.Process(target=_main, args=(plan, self.sent, self.started_unix),
                                       name="traffic-replay", daemon=True)

    @property
    def total(self) -> int:
        return len(self.plan.event_ids)

    def start(self) -> None:
        self.process.start()

    def done(self) -> bool:
        return not self.process.is_alive()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=30)

    def results(self) -> tuple[list[Served], int]:
        """(what each request saw, feedback errors); raises if the replay died."""
        if self.process.exitcode != 0:
            raise RuntimeError(f"the traffic replay exited with {self.process.exitcode}")
        served, feedback_errors = [], 0
        for line in self.plan.out_path.read_text().splitlines():
            record = json.loads(line)
            if record.get("kind") == "summary":
                feedback_errors = record["feedback_errors"]
            else:
                served.append(Served(**record))
        return served, feedback_errors


def _main(plan: ReplayPlan, sent: Synchronized, started_unix: Synchronized) -> None:
    asyncio.run(_Replay(plan, sent, started_unix).run())


class _Replay:
    def __init__(self, plan: ReplayPlan, sent: Synchronized, started_unix: Synchronized) -> None:
        self.plan, self.sent, self.started_unix = plan, sent, started_unix
        self.dataset = PreparedDataset(plan.data_dir)
        self.served: list[Served] = []
        self.feedback_errors = 0

    async def run(self) -> None:
        plan = self.plan
        bodies = [self.dataset.to_request(e, "slate") for e in plan.event_ids]  # before the clock starts
        # Clicks have a pool of their own: a feedback post waits until its record is durable (an fsync on a
        # busy disk), and in a shared pool those waits held the connections that ranking requests then
        # queued for, inside the client, inflating the HTTP latency measured here (not the server's).
        limits = httpx.Limits(max_connections=plan.concurrency)
        async with httpx.AsyncClient(base_url=plan.http_url, timeout=30, limits=limits) as http, \
                httpx.AsyncClient(base_url=plan.http_url, timeout=30, limits=limits) as clicks, \
                grpc.aio.insecure_channel(plan.grpc_target) as channel:
            stub = ranking_v3_pb2_grpc.RankingStub(channel)
            gate = asyncio.Semaphore(plan.concurrency)
            tasks: set[asyncio.Task] = set()
            start = time.perf_counter()
            self.started_unix.value = time.time()
            for index, (event_id, body) in enumerate(zip(plan.event_ids, bodies, strict=True)):
                delay = start + index / plan.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await gate.acquire()
                task = asyncio.create_task(self._one(http, clicks, stub, event_id, body,
                                                     "grpc" if index % 2 else "http", start, gate))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                self.sent.value = index + 1
            await asyncio.gather(*tasks)
        with plan.out_path.open("w") as out:
            for served in self.served:
                out.write(json.dumps(asdict(served)) + "\n")
            out.write(json.dumps({"kind": "summary", "feedback_errors": self.feedback_errors}) + "\n")

    async def _one(self, http: httpx.AsyncClient, clicks: httpx.AsyncClient, stub: ranking_v3_pb2_grpc.RankingStub,
                   event_id: int, body: dict[str, Any], protocol: str, start: float, gate: asyncio.Semaphore) -> None:
        source = self.plan.traffic_sources.get(event_id)
        scenario = self.plan.scenarios.get(event_id)
        sent = time.perf_counter()
        version, error, ranking, policy, served_id = None, None, [], "model", ""
        try:
            if protocol == "http":
                route = f"/v1/scenarios/{scenario}/rank" if scenario else "/v1/rank"
                response = await http.post(route, json=body, headers={SOURCE_HEADER: source} if source else None)
                if response.status_code == 200:
                    served = response.json()
                    version, ranking, policy = served["model_version"], served["ranking"], served["policy"]
                    served_id = served["request_id"]  # the server's id of it: feedback is sent with it
                else:
                    error = f"HTTP {response.status_code}: {response.text[:300]}"
            else:
                message = columns_from_dict(body)
                if scenario:
                    message.scenario = scenario
                reply = await stub.Rank(message, timeout=30,
                                        metadata=((SOURCE_HEADER, source),) if source else None)
                version, ranking, policy = reply.model_version, list(reply.ranking), reply.policy
                served_id = reply.request_id
        except grpc.aio.AioRpcError as exc:
            error = f"gRPC {exc.code().name}: {(exc.details() or '')[:300]}"
        except (httpx.HTTPError, grpc.RpcError) as exc:
            error = f"{type(exc).__name__}: {str(exc)[:300]}"
        finally:
            gate.release()
        latency_ms = round((time.perf_counter() - sent) * 1e3, 3)
        real_item = str(body["candidates"][0]["item_id"])
        rank = ranking.index(real_item) if real_item in ranking else None
        clicked = rank is not None and rank < self.plan.exposed_positions and \
            random.Random(body["request_id"]).random() < 1.0 / math.log2(rank + 2)
        index = {str(c["item_id"]): i for i, c in enumerate(body["candidates"])}
        self.served.append(Served(round(sent - start, 4), latency_ms, protocol, version, error, rank, clicked, event_id,
                                  str(body["user"]["user_id"]), policy, source, len(index),
                                  [index[item] for item in ranking[: self.plan.exposed_positions]], scenario))
        if clicked:
            await asyncio.sleep(self.plan.feedback_delay_s)  # the click comes later than the response
            await self._feedback(clicks, stub, served_id, real_item, protocol)

    async def _feedback(self, http: httpx.AsyncClient, stub: ranking_v3_pb2_grpc.RankingStub, request_id: str,
                        item_id: str, protocol: str) -> None:
        try:
            if protocol == "http":
                response = await http.post("/v1/feedback", json={"request_id": request_id, "item_id": item_id,
                                                                  "label": 1.0})
                response.raise_for_status()
            else:
                await stub.Feedback(ranking_v3_pb2.FeedbackRequest(request_id=request_id, item_id=item_id, label=1.0),
                                    timeout=30)
        except (httpx.HTTPError, grpc.RpcError):
            self.feedback_errors += 1
