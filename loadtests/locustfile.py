"""Locust users for the student server: `locust -f loadtests/ --host http://127.0.0.1:8080`.

- RankHttpUser: POST /v1/rank with real histories of the served data and 20-200 candidates.
- RankGrpcUser: gRPC Rank (recdistill.v3, columnar) on RECDISTILL_GRPC_TARGET (default 127.0.0.1:50051), reported
  to Locust's stats.
- OperatorUser: every 20-40 s, activates another registry version (token: RECDISTILL_ADMIN_TOKEN).
- SoakHttpUser (only with RECDISTILL_SOAK_RATE set): RankHttpUser at a fixed rate (`make soak`).
Requests come from the prepared dataset in RECDISTILL_DATA (default runs/demo/data, what `make demo` prepared),
or when none is prepared from the shipped example for the schema of the registry in RECDISTILL_REGISTRY (default
runs/demo/registry): examples/rank_request[.SCHEMA].json. Pick users with `locust ... RankHttpUser`.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import grpc
import numpy as np
import orjson
from locust import FastHttpUser, User, between, constant, constant_throughput, events, task

from recdistill.core._proto import ranking_v3_pb2_grpc
from recdistill.core.contracts.rank_v3 import columns_from_dict

ROOT = Path(__file__).parents[1]


class RequestMix:
    def __init__(self, bodies: list[dict]) -> None:
        self.bodies = bodies
        self._encoded = [orjson.dumps(b) for b in bodies]
        self._cycle = itertools.cycle(range(len(bodies)))

    def next_json(self) -> bytes:
        return self._encoded[next(self._cycle)]


def _example() -> Path:
    """The shipped example request for the served registry's schema."""
    from recdistill.core.features.examples import DEFAULT_EXAMPLE, example_request

    schema = Path(os.environ.get("RECDISTILL_REGISTRY", ROOT / "runs" / "demo" / "registry")) / "features.json"
    name = json.loads(schema.read_text())["name"] if schema.is_file() else DEFAULT_EXAMPLE
    path = example_request(name)
    if not path.is_file():
        raise SystemExit(f"no example request for schema {name!r} ({path}): set RECDISTILL_DATA to its prepared data")
    return path


def request_mix(count: int, seed: int = 0) -> RequestMix:
    data = Path(os.environ.get("RECDISTILL_DATA", ROOT / "runs" / "demo" / "data"))
    rng = np.random.default_rng(seed)
    if not (data / "manifest.json").exists():
        example = json.loads(_example().read_text())
        sizes = rng.integers(20, len(example["candidates"]) + 1, count)
        return RequestMix([example | {"candidates": example["candidates"][:n]} for n in sizes])
    from recdistill.core.data.dataset import PreparedDataset

    dataset = PreparedDataset(data)
    events = rng.choice(dataset.split("test", "slate"), count, replace=False)
    catalogue = list(dict.fromkeys([*dataset.schema.item_vocab, *dataset.schema.item_table]))
    bodies = []
    for event in events:
        body = dataset.to_request(int(event), "slate")
        extra = rng.choice(catalogue, int(rng.integers(0, 180)), replace=False)
        body["candidates"] += [{"item_id": str(item)} for item in extra]
        bodies.append(body)
    return RequestMix(bodies)


BODIES = request_mix(int(os.environ.get("RECDISTILL_LOAD_REQUESTS", "200")))


class RankHttpUser(FastHttpUser):
    wait_time = constant(0)
    weight = 3

    @task
    def rank(self) -> None:
        body = BODIES.next_json()
        with self.client.post("/v1/rank", data=body, headers={"content-type": "application/json"},
                              name="/v1/rank", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")


if os.environ.get("RECDISTILL_SOAK_RATE"):  # defined only for soak runs, so the default mix is unchanged

    class SoakHttpUser(RankHttpUser):
        """Fixed rate for soak runs: RECDISTILL_SOAK_RATE requests/s per user."""

        wait_time = constant_throughput(float(os.environ["RECDISTILL_SOAK_RATE"]))


class RankGrpcUser(User):
    """Locust's documented pattern for gRPC: time the call and fire `events.request` ourselves."""

    wait_time = constant(0)
    weight = 1

    def on_start(self) -> None:
        self.channel = grpc.insecure_channel(os.environ.get("RECDISTILL_GRPC_TARGET", "127.0.0.1:50051"))
        self.stub = ranking_v3_pb2_grpc.RankingStub(self.channel)  # the columnar message (v3)
        self.messages = [columns_from_dict(b) for b in BODIES.bodies[:50]]
        self.index = 0

    def on_stop(self) -> None:
        self.channel.close()

    @task
    def rank(self) -> None:
        message = self.messages[self.index % len(self.messages)]
        self.index += 1
        started = time.perf_counter()
        exception: Exception | None = None
        length = 0
        try:
            length = self.stub.Rank(message, timeout=10).ByteSize()
        except grpc.RpcError as error:
            exception = error
        events.request.fire(request_type="grpc", name="Ranking/Rank", response_time=(time.perf_counter() - started)
                            * 1000, response_length=length, exception=exception, context={})


class OperatorUser(FastHttpUser):
    """Swaps the active version back and forth while the other users load the server."""

    wait_time = between(20, 40)
    weight = 1
    fixed_count = 1

    def on_start(self) -> None:
        self.headers = {"Authorization": f"Bearer {os.environ.get('RECDISTILL_ADMIN_TOKEN', '')}"}

    @task
    def swap(self) -> None:
        listing = self.client.get("/admin/versions", headers=self.headers, name="/admin/versions").json()
        versions = [v["version"] for v in listing["versions"]]
        others = [v for v in versions if v != listing["active"]]
        if others:
            self.client.post(f"/admin/versions/{others[0]}/activate", headers=self.headers,
                             name="/admin/versions/{v}/activate")
