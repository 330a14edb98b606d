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

# `scenario`: a declared scenario's name on ranking requests ("unknown" when the request named another; never a
# value taken from the request), "" on the other endpoints.
LATENCY = Histogram("recdistill_request_seconds", "Request latency", ["endpoint", "protocol", "scenario"],
                    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
REQUESTS = Counter("recdistill_requests", "Requests by outcome", ["endpoint", "protocol", "status", "scenario"])
CANDIDATES = Histogram("recdistill_candidates_per_request", "Candidates per ranking request",
                       buckets=(1, 10, 20, 50, 100, 200, 500, 1000))
ACTIVE_VERSION = Gauge("recdistill_active_version_info", "1 for each scenario's active model version",
                       ["scenario", "version"],
                       multiprocess_mode="max")
SWAPS = Counter("recdistill_model_swaps", "Activations of a model version")
ROLLBACKS = Counter("recdistill_model_rollbacks", "Rollbacks to the previous version")
EXPLORED = Counter("recdistill_explored_requests", "Requests of the exploration slice (served in a random order)")
SAMPLED = Counter("recdistill_sampled_records", "Records written to the sample log", ["kind"])
DROPPED = Counter("recdistill_dropped_records", "Sampled records not written to the sample log, by reason "
                  "(queue_full, unencodable, buffer_full: the log was unavailable and the buffer full)",
                  ["kind", "reason"])
SCORING_QUEUE = Gauge("recdistill_scoring_queue_requests", "Ranking requests waiting for or in ONNX scoring (the "
                      "autoscaler's in-flight signal; set once per batch)", multiprocess_mode="livesum")
BUFFERED = Gauge("recdistill_sample_buffered", "Sampled records held while the sample log is unavailable",
                 multiprocess_mode="livesum")
LOG_UP = Gauge("recdistill_sample_log_up", "1 while the last write to the sample log succeeded",
               multiprocess_mode="min")


_shown: dict[str, set[str]] = {}


def set_active_version(scenario: str, version: str) -> None:
    # Zero the others rather than clear(): in multiprocess mode values live in shared files.
    shown = _shown.setdefault(scenario, set())
    for other in shown - {version}:
        ACTIVE_VERSION.labels(scenario=scenario, version=other).set(0)
    ACTIVE_VERSION.labels(scenario=scenario, version=version).set(1)
    shown.add(version)


def count_request(endpoint: str, protocol: str, status: str, scenario: str = "") -> None:
    REQUESTS.labels(endpoint=endpoint, protocol=protocol, status=status, scenario=scenario).inc()


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
