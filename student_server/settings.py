"""Student server settings.

Precedence (see `recdistill.core.settings.load_settings`): defaults < the `[student]` table of a TOML
config file (`--config`) < the environment (STUDENT_<FIELD>, e.g. STUDENT_SAMPLING_RATE=0.1; the
operator token is RECDISTILL_ADMIN_TOKEN) < flags given on the command line."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from recdistill.core.features.request import MAX_CANDIDATES, MAX_HISTORY_EVENTS
from recdistill.core.samplelog.source import LogURL


class StudentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STUDENT_", extra="ignore", populate_by_name=True)

    registry: Path = Path("registry")
    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int = 50051
    workers: int = 1
    # One log line per request costs a noticeable share of a small request's CPU; /metrics counts them.
    access_log: bool = False
    # How long an idle HTTP/1.1 connection stays open. Above the idle expiry of the clients and balancers in
    # front (httpx 5 s, aiohttp 15 s, an AWS ALB 60 s): at uvicorn's 5 s, the same as httpx's, a client could
    # send on a connection in the instant the server closed it and read a reset instead of an answer.
    keep_alive_s: float = Field(default=75.0, gt=0)
    admin_token: str | None = Field(default=None, validation_alias=AliasChoices("RECDISTILL_ADMIN_TOKEN",
                                                                                "STUDENT_ADMIN_TOKEN"))
    max_candidates: int = Field(default=MAX_CANDIDATES, ge=1, le=MAX_CANDIDATES)
    max_history: int = Field(default=MAX_HISTORY_EVENTS, ge=0, le=MAX_HISTORY_EVENTS)
    max_body_bytes: int = 4 << 20
    # A request field the registry's feature schema does not declare: 422 naming it (the default), or
    # accepted and ignored (for a frontend that sends more than this schema reads).
    ignore_unknown_features: bool = False
    body_timeout_s: float = Field(default=10.0, gt=0)  # a request body must arrive within this
    # ONNX Runtime threads per process: processes x threads should not exceed the cores.
    ort_threads: int = Field(default=1, ge=1)
    # ONNX Runtime execution providers, in order of preference; the CPU is always the fallback. CUDA needs
    # the `gpu` extra (onnxruntime-gpu): STUDENT_ORT_PROVIDERS='["CUDAExecutionProvider"]'.
    ort_providers: list[str] = ["CPUExecutionProvider"]
    max_batch_requests: int = Field(default=32, ge=1)
    # How long the batcher waits for more requests after the first. Swept with 16 connections on 2
    # cores (req/s, 2 processes): 100 us ~9.0k, 200 us ~8.7k, 500 us ~7.5k, 1 ms ~5.5k; 0 costs more
    # CPU a request (a GIL handoff per request).
    max_batch_wait_us: int = Field(default=100, ge=0)
    warmup_runs: int = 20
    state_poll_s: float = 0.5
    # A fleet: the active-version pointer in Redis / Valkey (redis://HOST:PORT/N), shared by every replica and
    # pushed to them by pub/sub; None: state.json in the registry directory, polled. Env STUDENT_REGISTRY_STORE
    # or RECDISTILL_REGISTRY_STORE. The registry directory itself must be a path every replica reads.
    registry_store: str | None = Field(default=None, validation_alias=AliasChoices(
        "STUDENT_REGISTRY_STORE", "RECDISTILL_REGISTRY_STORE", "registry_store"))
    # Traffic sampling into the sample log (0 disables it).
    sampling_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # Heavy users dominate raw traffic; a lower rate for them keeps the sample diverse. Each record
    # carries its probability, and the worker weights by its inverse. None: `sampling_rate` for all.
    sampling_rate_long_history: float | None = Field(default=None, ge=0.0, le=1.0)
    long_history_events: int = Field(default=100, ge=1)
    # A logging policy by traffic source (the `traffic_source_header` of each request, which no model reads),
    # e.g. {"search": 0.2}: requests from that source are sampled at 0.2 times the rate above. Each record
    # carries its probability, so the worker's inverse weights undo this too.
    sampling_rate_by_source: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = {}
    traffic_source_header: str = "x-traffic-source"
    # The exploration slice: this share of requests is served in a uniformly random order (their records say
    # policy "random"). Position is then independent of the item there, so clicks on it evaluate a model
    # without the served ranking's bias; the worker keeps them out of training for that.
    exploration_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # file:DIR (the embedded default; a partition per process) or redis://HOST:PORT/N (Redis Streams, shared
    # by every replica); env STUDENT_SAMPLE_LOG or RECDISTILL_SAMPLE_LOG (shared with the worker).
    sample_log: LogURL = Field(default="samples", validation_alias=AliasChoices("STUDENT_SAMPLE_LOG",
                                                                             "RECDISTILL_SAMPLE_LOG", "sample_log"))
    # Sampled records held while the broker is unreachable (then dropped and counted); sending resumes by
    # itself. Feedback is never held: it is refused (503) so that its sender retries.
    sample_buffer: int = Field(default=50_000, ge=0)
    sample_queue: int = Field(default=10_000, ge=1)
    # Names this server's sample-log partitions (`<server_id>-<n>`, one per live process): keep it
    # stable across restarts (the default, the host name, is; in Kubernetes use the pod's stable name).
    server_id: str = Field(default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    # Retention never deletes the newest N segments of a partition, whatever the consumers committed.
    sample_log_min_segments: int = Field(default=2, ge=1)

    @field_validator("ort_providers")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        import onnxruntime as ort

        unknown = [name for name in value if name not in ort.get_all_providers()]
        if unknown:
            raise ValueError(f"unknown ONNX Runtime execution provider(s) {unknown}; known: "
                             f"{', '.join(ort.get_all_providers())}")
        return value
