"""Distill worker settings: one model with nested sections (teacher, distill, stream, gate).

Precedence (see `recdistill.core.settings.load_settings`): defaults < the `[worker]` table of a TOML
config file (`--config`) < the environment < flags given on the command line. Environment names:
WORKER_<FIELD> for top-level fields, WORKER_<SECTION>__<FIELD> for a section's field (for example
WORKER_TEACHER__URL, WORKER_GATE__AUC_TOLERANCE, WORKER_STREAM__EXPORT_EVERY), and
RECDISTILL_ADMIN_TOKEN for the operator token.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from recdistill.core.contracts.dataset import Task
from recdistill.core.contracts.worker import CalibrationMethod
from recdistill.core.data.dense import DenseCandidates
from recdistill.core.features.schema import FeatureSchema
from recdistill.core.features.spec import ScenarioSpec
from recdistill.core.places import ScenarioPlace
from recdistill.core.samplelog.source import LogURL


class TeacherClientSettings(BaseModel):
    """How the worker talks to the teacher: Triton gRPC, batched, bounded, retried, with a breaker."""

    url: str = "127.0.0.1:8001"
    model_name: str = "teacher"
    # The teacher is a black box: its version is what the operator says it serves.
    teacher_version: str = "unknown"
    # Train only on labels of this teacher version, read from the label store or log (a request without one is
    # set aside with its reason when the teacher now serves another). None: the version it serves, the newest.
    label_version: str | None = None

    @property
    def trained_version(self) -> str:
        """The teacher version whose labels the student trains on."""
        return self.label_version or self.teacher_version
    # End of the teacher's training window (unix seconds), from its manifest: the lag metric's origin.
    teacher_data_end_ts: float | None = None
    # Send only the most recent N history events (None: the teacher view's window), for a teacher that
    # reads no more than that: the same scores for less encoding and transfer.
    history_events: int | None = Field(default=None, ge=1)
    max_batch_rows: int = Field(default=64, ge=1)
    max_wait_ms: float = Field(default=5.0, ge=0)
    max_concurrency: int = Field(default=4, ge=1)
    timeout_s: float = Field(default=30.0, gt=0)
    retries: int = Field(default=6, ge=0)
    backoff_base_s: float = Field(default=0.2, gt=0)
    backoff_max_s: float = Field(default=5.0, gt=0)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=10.0, gt=0)
    # While the stream runs, the teacher's readiness is asked every `probe_period_s`; no answer within
    # `probe_timeout_s` marks it down (teacher_up 0), and its return wakes a waiting stream at once.
    probe_period_s: float = Field(default=1.0, gt=0)
    probe_timeout_s: float = Field(default=2.0, gt=0)


@dataclass(frozen=True)
class DistillConfig:
    """The student's training objective and schedule (batch phase; the stream reuses the objective)."""

    use_teacher: bool = True
    head: Literal["aux", "serving"] = "aux"
    kd_weight: float = 1.0  # free: not tied to sum to one with the label loss
    kd_loss: Literal["ce", "mse"] = "ce"  # "mse": on logits; its gradient vanishes when predictions saturate
    unexposed_weight: float = 1.0  # weight of teacher labels on candidates without an observed label
    epochs: int = 20
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.0  # Adam's L2 term, the regulariser every variant gets tuned on valid
    patience: int = 3
    seed: int = 0


@dataclass(frozen=True)
class StreamConfig:
    """The streaming phase: joining delayed feedback, incremental updates, export cadence."""

    join_window_s: float = 60.0  # feedback arriving later than this after the request is "late"
    exposed_positions: int = 10  # candidates ranked above this were shown: unlabelled ones count as 0
    max_records: int = 5_000  # per partition and step
    lr: float = 1e-3
    batch_size: int = 256  # examples per incremental update
    export_every: int = 1_000  # trained examples between export attempts
    inverse_propensity: bool = True  # weight examples by 1 / sampling probability
    # Train on the exploration slice too (requests served in a random order); off: it stays an unbiased
    # evaluation set, untouched by training.
    train_on_exploration: bool = False
    idle_s: float = 1.0  # pause after a step that found nothing to do
    outage_backoff_max_s: float = 30.0  # longest pause between tries while the teacher is unavailable
    # Keep every trained sample id in the checkpoint (audits and tests: exactly once, counted by id). Grows
    # with the stream: off in production.
    audit_trained_ids: bool = False


@dataclass(frozen=True)
class GateConfig:
    """What an exported student must pass before it serves."""

    # Non-inferiority margin in holdout AUC (the least; it is sized up to the holdout, below): a candidate is
    # refused unless the one-sided 95% lower bound of (candidate - reference) lies above -margin, against the
    # active version and against the anchor (a paired test, users resampled), so that losses within the
    # margin cannot add up over promotions.
    auc_tolerance: float = 0.002
    # The margin grows to what the holdout can resolve: the loss it refuses with this power.
    power: float = 0.8
    bootstrap_samples: int = 500
    latency_budget_ms: float = 5.0  # p99 of ONNX Runtime on the standard request, 1 thread
    latency_runs: int = 200
    # The gate's holdout: the most recent events of the valid window, used by nothing else (early stopping
    # and calibration read the valid window before them; the stream never trains on them in the demo).
    holdout_events: int = 2_000


class WorkerSettings(BaseSettings):
    """What the worker trains on, where it reads traffic and publishes, and its sections."""

    model_config = SettingsConfigDict(env_prefix="WORKER_", env_nested_delimiter="__", extra="ignore",
                                      populate_by_name=True)

    data: Path = Path("data/ml-100k")
    registry: Path = Path("registry")
    state_dir: Path = Path("worker-state")
    # The student servers' sample log: file:DIR (a directory per partition) or redis://HOST:PORT/N (Redis
    # Streams); env WORKER_SAMPLE_LOG or RECDISTILL_SAMPLE_LOG (shared with the servers, whose setting has
    # the same name).
    sample_log: LogURL = Field(default="samples", validation_alias=AliasChoices(
        "WORKER_SAMPLE_LOG", "RECDISTILL_SAMPLE_LOG", "sample_log"))
    # Teacher labels shared by every trainer through a log on the same backends (file:DIR, or
    # redis://HOST:PORT/N?stream=NAME, a stream of its own): labelled once, whichever trainer asks first. None:
    # a SQLite store in `state_dir`, shared only by the trainers of one host.
    label_log: LogURL | None = None
    # Where a trainer gets the labels it lacks: "teacher" (it asks, and writes them to the label store or log)
    # or "labeller" (it reads the label log only, which `recdistill worker label` writes, labelling every
    # sampled request once: the teacher's cost does not grow with the scenarios), waiting up to `label_wait_s`
    # a step for labels not there yet.
    labels_from: Literal["teacher", "labeller"] = "teacher"
    label_wait_s: float = Field(default=5.0, ge=0)
    # Names this worker in the sample log's consumer group; with a redis log, one worker trains at a time
    # (it holds a lease renewed every step), others wait as hot standbys and take over within the lease.
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lease_ttl_s: float = Field(default=10.0, gt=0)
    server_url: str | None = None  # student server to promote to; None: publish to the registry only
    admin_token: str | None = Field(default=None, validation_alias=AliasChoices("RECDISTILL_ADMIN_TOKEN",
                                                                                "admin_token"))
    # The scenario this worker trains (the schema's `[[scenarios]]`): its student view, its registry
    # (`registry/scenarios/<name>` beyond the first), its share of the sampled traffic (the requests it served
    # and those of its traffic sources; all of them when it lists none) and its consumer group. None: the
    # schema's first. The CLI's `--task` defaults to the scenario's.
    scenario: str | None = None
    task: Task = "slate"
    observed_negatives: int = Field(default=4, ge=0)  # sampled negatives with a hard label (0)
    teacher_negatives: int = Field(default=4, ge=0)  # further not-yet-interacted items: a teacher label only
    # Dense black-box labels: for every labelled example, the teacher is also asked about `dense_own` of the
    # user's own earlier items (from the request's history) and `dense_popular` popular items; they carry no
    # observed label and train the student only through its teacher head.
    dense_own: int = Field(default=30, ge=0)
    dense_popular: int = Field(default=10, ge=0)
    # The student's training window, counted as events per user: each user's most recent N training events
    # (how much recent traffic a serving student retrains on). None: every event.
    window_events: int | None = Field(default=None, ge=1)
    max_train_events: int | None = None
    max_holdout_events: int | None = None  # the most recent N events of the valid and test windows
    calibration: CalibrationMethod = "platt"
    # Map calibrated teacher probabilities (full slates) into the student's negative-sampled space.
    sampling_correction: bool = True
    version_prefix: str = "student"
    # Prometheus metrics of the worker (teacher up, records, dead letters, promotions) on this port; None: off.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    teacher: TeacherClientSettings = TeacherClientSettings()
    distill: DistillConfig = DistillConfig()
    stream: StreamConfig = StreamConfig()
    gate: GateConfig = GateConfig()

    @property
    def dense(self) -> DenseCandidates | None:
        """The dense candidates of a labelled example (None: none)."""
        dense = DenseCandidates(own=self.dense_own, popular=self.dense_popular)
        return dense if dense.size else None

    def target(self, schema: FeatureSchema) -> ScenarioSpec:
        """The scenario trained (`UnknownScenarioError` names the declared ones)."""
        return schema.scenario(self.scenario)

    def place(self, schema: FeatureSchema) -> ScenarioPlace:
        """Where the scenario trained lives (registry, state, consumer group)."""
        return ScenarioPlace.of(schema, self.scenario)

    def target_registry(self, schema: FeatureSchema) -> Path:
        return self.place(schema).registry(self.registry)

    def target_state(self, schema: FeatureSchema) -> Path:
        """The scenario's own state (batch student, stream checkpoint, dead letters): `state_dir` for the
        first, `state_dir/scenarios/<name>` for the others. The label store stays at `state_dir`, shared: a
        request one scenario's trainer had labelled is not sent to the teacher again for another."""
        return self.place(schema).state(self.state_dir)

    def group(self, schema: FeatureSchema) -> str:
        """The sample log's consumer group (and trainer lease) of this scenario's trainer."""
        return self.place(schema).consumer_group
