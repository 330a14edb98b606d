"""Prometheus metrics of the student server; aggregated across worker processes when
PROMETHEUS_MULTIPROC_DIR is set (the launcher sets it for --workers > 1)."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY = Histogram("recdistill_request_seconds", "Request latency", ["endpoint", "protocol"],
                    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
REQUESTS = Counter("recdistill_requests", "Requests by outcome", ["endpoint", "protocol", "status"])
CANDIDATES = Histogram("recdistill_candidates_per_request", "Candidates per ranking request",
                       buckets=(1, 10, 20, 50, 100, 200, 500, 1000))
ACTIVE_VERSION = Gauge("recdistill_active_version_info", "1 for the active model version", ["version"],
                       multiprocess_mode="max")
SWAPS = Counter("recdistill_model_swaps", "Activations of a model version")
ROLLBACKS = Counter("recdistill_model_rollbacks", "Rollbacks to the previous version")
EXPLORED = Counter("recdistill_explored_requests", "Requests of the exploration slice (served in a random order)")
SAMPLED = Counter("recdistill_sampled_records", "Records written to the sample log", ["kind"])
# The ranking paths' latency children, bound once (a labels() lookup per request is measurable).
RANK_HTTP_LATENCY = LATENCY.labels(endpoint="rank", protocol="http")
RANK_GRPC_LATENCY = LATENCY.labels(endpoint="rank", protocol="grpc")
RANK_HTTP_OK = REQUESTS.labels(endpoint="rank", protocol="http", status="200")
RANK_GRPC_OK = REQUESTS.labels(endpoint="rank", protocol="grpc", status="OK")
DROPPED = Counter("recdistill_dropped_records", "Sampled records not written to the sample log, by reason "
                  "(queue_full, unencodable, buffer_full: the log was unavailable and the buffer full)",
                  ["kind", "reason"])
SCORING_QUEUE = Gauge("recdistill_scoring_queue_requests", "Ranking requests waiting for or in ONNX scoring (the "
                      "autoscaler's in-flight signal; set once per batch)", multiprocess_mode="livesum")
BUFFERED = Gauge("recdistill_sample_buffered", "Sampled records held while the sample log is unavailable",
                 multiprocess_mode="livesum")
LOG_UP = Gauge("recdistill_sample_log_up", "1 while the last write to the sample log succeeded",
               multiprocess_mode="min")


_shown: set[str] = set()


def set_active_version(version: str) -> None:
    # Zero the others rather than clear(): in multiprocess mode values live in shared files.
    for other in _shown - {version}:
        ACTIVE_VERSION.labels(version=other).set(0)
    ACTIVE_VERSION.labels(version=version).set(1)
    _shown.add(version)


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
