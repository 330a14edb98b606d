"""Settings of the teacher's Triton serving (env prefix TEACHER_, e.g. TEACHER_GRPC_PORT=9001)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from recdistill.core.features.request import MAX_CANDIDATES, MAX_HISTORY_EVENTS
from teacher_service.device import Device


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class TeacherServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TEACHER_", extra="ignore")

    checkpoint: Path  # required: a flag, the config file or TEACHER_CHECKPOINT
    model_name: str = "teacher"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    # Model instances x torch threads per instance should not exceed the cores.
    instances: int = Field(default_factory=lambda: max(1, _cores() // 2))
    threads_per_instance: int = 0  # 0: cores // instances
    max_batch_size: int = 64
    # 0: Triton's dynamic batcher merges only requests that queued while the model was busy, and never holds
    # a lone request back (a 2 ms window cost every 100-event request 2 ms; BENCHMARKS.md).
    max_queue_delay_us: int = 0
    max_candidates: int = MAX_CANDIDATES
    max_history: int = MAX_HISTORY_EVENTS
    # auto: the model on the GPU when CUDA is present (every instance shares it), else the CPU.
    device: Device = "auto"  # where the model runs; the Triton instance kind follows (`teacher_service.device`)

    @model_validator(mode="after")
    def _fill_threads(self) -> TeacherServeSettings:
        if self.instances < 1:
            raise ValueError("instances must be at least 1")
        if self.threads_per_instance <= 0:
            self.threads_per_instance = max(1, _cores() // self.instances)
        return self
