"""Sample log: what one poll of the worker costs when a few records are new, in a small and in a large
segment. The reader remembers where it stopped, so the cost should follow the new data, not the segment."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.results import Results, Row
from recdistill.core.contracts.records import FeedbackRecord, SampledRequest, decode_record, encode_record
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.samplelog import SampleLog

SECTION = "Sample log (embedded, local segment files)"
COMMAND = "make bench  # benchmarks/samplelog_bench.py"
NEW_PER_POLL = 10


def _payloads(dataset: PreparedDataset, count: int) -> list[bytes]:
    """Realistic records: sampled slate requests (10 candidates) with their feedback, encoded as served."""
    events = dataset.split("valid", "slate")[:count]
    out = []
    for event in events:
        body = dataset.to_request(int(event), "slate", negatives=9)
        scores, positions = SampledRequest.pack(np.full(10, 0.5), np.arange(10))
        out.append(encode_record(SampledRequest(
            request_id=body["request_id"], ts=1.0, request_ts=1.0, model_version="v1", sampling_probability=1.0,
            request=json.dumps(body).encode(), scores=scores, positions=positions)))
        out.append(encode_record(FeedbackRecord(request_id=body["request_id"], item_id="1", label=1.0, ts=1.0,
                                                received_ts=1.0)))
    return out


def _poll_costs(directory: Path, segment_bytes: int, payloads: list[bytes], polls: int
                ) -> tuple[list[float], list[float]]:
    """Seconds of each poll that reads NEW_PER_POLL new records at the end of a full segment: with the
    worker's long-lived reader, and (the first few polls) with a fresh reader that has to find them."""
    writer = SampleLog(directory, segment_bytes=segment_bytes * 2, fsync=False)
    written = 0
    while written * (sum(map(len, payloads)) / len(payloads)) < segment_bytes:
        writer.append(payloads)
        written += len(payloads)
    reader = SampleLog(directory)
    offset = 0
    while batch := reader.read(offset, 100_000):
        offset = batch[-1][0] + 1
    costs, fresh_costs = [], []
    for poll in range(polls):
        writer.append(payloads[poll * NEW_PER_POLL % len(payloads):][:NEW_PER_POLL])
        if poll < 5:
            started = time.perf_counter()
            fresh = SampleLog(directory).read(offset, 100_000)
            fresh_costs.append(time.perf_counter() - started)
            assert len(fresh) == NEW_PER_POLL, len(fresh)
        started = time.perf_counter()
        batch = reader.read(offset, 100_000)
        for _, payload in batch:
            decode_record(payload)
        costs.append(time.perf_counter() - started)
        assert len(batch) == NEW_PER_POLL, len(batch)
        offset = batch[-1][0] + 1
    writer.close()
    return costs, fresh_costs


def run(results: Results, dataset: PreparedDataset, quick: bool) -> None:
    payloads = _payloads(dataset, 500)
    polls = 50 if quick else 300
    medians = {}
    for size in (1 << 20, 64 << 20):
        with tempfile.TemporaryDirectory(prefix="samplelog-bench-") as tmp:
            costs, fresh = _poll_costs(Path(tmp), size, payloads, polls)
        medians[size] = statistics.median(costs)
        label = f"{size >> 20} MiB"
        results.add(Row(SECTION, f"poll reading {NEW_PER_POLL} new records, {label} segment", medians[size] * 1e6,
                        "us", "a fresh reader finding them (scans the segment, as every poll did before)",
                        statistics.median(fresh) * 1e6,
                        note=f"median of {polls} polls (fresh reader: of 5); decode included", command=COMMAND))
    results.add(Row(SECTION, f"poll cost, 64 MiB segment vs 1 MiB ({NEW_PER_POLL} new records)",
                    medians[64 << 20] * 1e6, "us", "1 MiB segment", medians[1 << 20] * 1e6,
                    note="near 1x when a poll costs what is new, not what the segment holds", command=COMMAND))
