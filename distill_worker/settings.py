"""Distill worker settings (env prefix WORKER_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TeacherClientSettings(BaseSettings):
    """How the worker talks to the teacher: Triton gRPC, batched, bounded, retried, with a breaker."""

    model_config = SettingsConfigDict(env_prefix="WORKER_TEACHER_", extra="ignore")

    url: str = "127.0.0.1:8001"
    model_name: str = "teacher"
    # The teacher is a black box: its version is what the operator says it serves.
    teacher_version: str = "unknown"
    # End of the teacher's training window (unix seconds), from its manifest: the lag metric's origin.
    teacher_data_end_ts: float | None = None
    max_batch_rows: int = Field(default=64, ge=1)
    max_wait_ms: float = Field(default=5.0, ge=0)
    max_concurrency: int = Field(default=4, ge=1)
    timeout_s: float = Field(default=30.0, gt=0)
    retries: int = Field(default=6, ge=0)
    backoff_base_s: float = Field(default=0.2, gt=0)
    backoff_max_s: float = Field(default=5.0, gt=0)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=10.0, gt=0)


class LabelStoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WORKER_LABELS_", extra="ignore")

    path: Path = Path("labels.sqlite")


class WorkerSettings(BaseSettings):
    """What the worker trains on and where it publishes (env prefix WORKER_)."""

    model_config = SettingsConfigDict(env_prefix="WORKER_", extra="ignore", populate_by_name=True)

    data: Path = Path("data/ml-100k")
    registry: Path = Path("registry")
    state_dir: Path = Path("worker-state")
    server_url: str | None = None  # student server to promote to; None: publish to the registry only
    admin_token: str | None = Field(default=None, validation_alias="RECDISTILL_ADMIN_TOKEN")
    task: str = "slate"
    observed_negatives: int = 4  # sampled negatives with a hard label (0)
    teacher_negatives: int = 4  # further never-rated items that get only a teacher label
    max_train_events: int | None = None
    max_holdout_events: int | None = None  # the most recent N events of the valid and test windows
    calibration: str = "platt"  # none | platt | isotonic
    # Map calibrated teacher probabilities (full slates) into the student's negative-sampled space.
    sampling_correction: bool = True
    version_prefix: str = "student"
