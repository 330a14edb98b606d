"""kill -9 of a real `recdistill worker run --mode stream` process while traffic flows: the restarted
worker resumes from its last checkpoint, and in the end every acknowledged ranking request is trained
exactly once and every record written is consumed once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from distill_worker.label_log import SharedLabelStore
from recdistill.core.contracts.records import FeedbackRecord, SampledRequest
from recdistill.core.contracts.worker import StreamCheckpoint
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.processes import free_port
from recdistill.core.samplelog import LogLocation
from tests.conftest import RunningTriton
from tests.student_server.conftest import make_settings, run_server, sampled_records

pytestmark = pytest.mark.e2e
_HELD_BACK = 40  # requests sent only after the kill


def _worker(ml100k: PreparedDataset, triton: RunningTriton, registry: Path, samples: Path, state_dir: Path,
            metrics_port: int, *extra: str) -> subprocess.Popen:
    command = [str(Path(sys.executable).parent / "recdistill"), "worker", "run", "--mode", "stream",
               "--data", str(ml100k.directory), "--sample-log", str(samples), "--state-dir", str(state_dir),
               "--registry", str(registry), "--teacher-url", triton.grpc_url, "--teacher-version", "tiny-1",
               "--join-window-s", "0", "--export-every", "1000000", "--metrics-port", str(metrics_port), *extra]
    env = os.environ | {"WORKER_MAX_HOLDOUT_EVENTS": "300"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)


def _consumed(metrics_port: int) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
    except httpx.TransportError:
        return 0.0
    return sum(sample.value for family in text_string_to_metric_families(text)
               if family.name == "recdistill_worker_records_consumed"
               for sample in family.samples if sample.name.endswith("_total"))


async def _kill_mid_traffic(worker: subprocess.Popen, metrics_port: int, checkpoint: Path, load: asyncio.Task,
                            killed: asyncio.Event) -> None:
    """kill -9 of the worker once it has consumed records and checkpointed, while requests still arrive; then
    the rest of the traffic. The traffic holds its last requests back until `killed` is set, so a worker that
    is slow to start (a loaded CI machine) still meets the kill before the traffic ends."""
    deadline = time.monotonic() + 180
    try:
        while not (_consumed(metrics_port) > 0 and checkpoint.exists()):
            assert worker.poll() is None, worker.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the worker never consumed the traffic"
            await asyncio.sleep(0.1)
        assert not load.done(), "the kill must land while traffic flows"
        worker.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(worker.wait, 30) == -signal.SIGKILL
    finally:
        killed.set()
    await load


async def test_kill_9_of_the_stream_worker_under_load_trains_each_request_once(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    samples, state_dir = tmp_path / "samples", tmp_path / "worker"
    events = ml100k.split("test")[:240].tolist()
    ranked: list[str] = []
    clicked: list[str] = []
    settings = make_settings(registry, tmp_path, sampling_rate=1.0)
    metrics_port = free_port()
    worker = _worker(ml100k, triton_teacher, registry, samples, state_dir, metrics_port)
    try:
        async with run_server(settings) as server, httpx.AsyncClient(base_url=server.http_url) as client:

            killed = asyncio.Event()

            async def traffic(chunk: list[int]) -> None:
                for index, event in enumerate(chunk):
                    if index == len(chunk) - _HELD_BACK:
                        await killed.wait()
                    body = ml100k.to_request(event, "slate", negatives=9)
                    response = await client.post("/v1/rank", json=body)
                    if response.status_code != 200:
                        continue
                    ranked.append(response.json()["request_id"])  # the server's id: feedback is sent with it
                    if event % 3 == 0:
                        click = {"request_id": ranked[-1], "item_id": body["candidates"][0]["item_id"], "label": 1}
                        if (await client.post("/v1/feedback", json=click)).status_code == 202:
                            clicked.append(ranked[-1])
                    await asyncio.sleep(0.02)  # bounded: 240 requests, about 50 per second at most

            await _kill_mid_traffic(worker, metrics_port, state_dir / "stream.pt",
                                    asyncio.create_task(traffic(events)), killed)
        saved = torch.load(state_dir / "stream.pt", map_location="cpu", weights_only=True)
        at_kill = msgspec.to_builtins(StreamCheckpoint.from_torch(saved, "stream.pt").state)
        assert 0 < at_kill["records_consumed"] < len(events), "the kill landed part-way through the traffic"

        # The restarted worker drains what is left and exits after a bounded number of steps.
        restarted = _worker(ml100k, triton_teacher, registry, samples, state_dir, free_port(), "--steps", "3")
        out, err = await asyncio.to_thread(restarted.communicate, timeout=300)
        assert restarted.returncode == 0, err[-3000:]
    finally:
        for process in (worker,):
            if process.poll() is None:
                process.kill()
                process.wait()
    report = json.loads(out[out.index("{"):])
    records = sampled_records(samples)
    requests = [r.request_id for r in records if isinstance(r, SampledRequest)]
    feedback = [r.request_id for r in records if isinstance(r, FeedbackRecord)]
    assert len(ranked) == len(events)
    assert sorted(requests) == sorted(ranked), "every acknowledged request logged"
    assert sorted(feedback) == sorted(clicked), "every acknowledged click logged"
    assert report["records_consumed"] == len(records) == len(ranked) + len(clicked)
    assert report["dead_lettered"] == 0
    assert report["examples_trained"] == len(ranked), "each sampled request trained exactly once across the kill"
    assert report["feedback_joined"] + report["unmatched_feedback"] == len(clicked)


async def test_kill_9_of_one_scenarios_trainer_trains_each_request_once_per_scenario_and_labels_once(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    """Two scenarios' trainers over one sample log and one label log: `related`'s is killed -9 while traffic
    flows and restarted; each trains exactly the requests its scenario served, once, and the teacher labelled
    each request once (a label asked again would be a second record of it in the label log)."""
    samples, state_dir, labels = tmp_path / "samples", tmp_path / "worker", tmp_path / "labels"
    shared = ("--label-log", str(labels))
    events = ml100k.split("test")[:160].tolist()
    served: dict[str, list[str]] = {"home": [], "related": []}
    settings = make_settings(registry, tmp_path, sampling_rate=1.0)
    metrics_port = free_port()
    worker = _worker(ml100k, triton_teacher, registry, samples, state_dir, metrics_port, "--scenario", "related",
                     *shared)
    related_state = state_dir / "scenarios" / "related"
    try:
        async with run_server(settings) as server, httpx.AsyncClient(base_url=server.http_url) as client:

            killed = asyncio.Event()

            async def traffic() -> None:
                for index, event in enumerate(events):
                    if index == len(events) - _HELD_BACK:
                        await killed.wait()
                    scenario = "related" if index % 2 else "home"
                    route = "/v1/scenarios/related/rank" if scenario == "related" else "/v1/rank"
                    body = ml100k.to_request(event, "slate", negatives=9)
                    response = await client.post(route, json=body)
                    if response.status_code == 200:
                        served[scenario].append(response.json()["request_id"])
                    await asyncio.sleep(0.02)  # bounded: 160 requests, about 50 per second at most

            await _kill_mid_traffic(worker, metrics_port, related_state / "stream.pt", asyncio.create_task(traffic()),
                                    killed)
        reports = {}
        for scenario in ("related", "home"):  # the restarted one, then the other scenario's, each to the end
            process = _worker(ml100k, triton_teacher, registry, samples, state_dir, free_port(), "--scenario",
                              scenario, "--steps", "3", *shared)
            out, err = await asyncio.to_thread(process.communicate, timeout=300)
            assert process.returncode == 0, err[-3000:]
            reports[scenario] = json.loads(out[out.index("{"):])
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    records = [r for r in sampled_records(samples) if isinstance(r, SampledRequest)]
    assert sorted(r.request_id for r in records) == sorted(served["home"] + served["related"])
    for scenario, other in (("related", "home"), ("home", "related")):
        report = reports[scenario]
        assert report["records_consumed"] == len(records)
        assert report["examples_trained"] == len(served[scenario]), f"{scenario}: each of its requests once"
        assert report["other_scenario"] == len(served[other])
        assert report["dead_lettered"] == report["duplicates"] == 0
    store = SharedLabelStore(LogLocation.parse(labels), "auditor")
    try:
        assert store.refresh() == len(records), "one label record a request: none asked twice"
    finally:
        store.close()
    assert (store.duplicates, store.invalid) == (0, 0)
