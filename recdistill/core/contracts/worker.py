"""The distill worker's files and results: what a published version was trained on (`DataWindow`, in its
registry manifest), what a publish did (`PublishResult`, returned, never filled in), and the stream's
checkpoint (`StreamState` and `StreamCheckpoint`, `stream.pt`).

The checkpoint carries `format`; a reader that meets another format stops with an error naming it. Its
tensors (weights, optimizer) are saved by torch and loaded with `weights_only=True`; everything else is this
module's structs, msgpack-encoded: nothing in it is a pickled object.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import msgspec
import numpy as np
from msgspec import Struct, field

from recdistill.core.contracts.versioned import decode_versioned
from recdistill.core.errors import DataError

CHECKPOINT_FORMAT = 2  # 1: the state as a plain dict, loaded with weights_only=False (still read)
CALIBRATION_FORMAT = 1
CalibrationMethod = Literal["none", "platt", "isotonic"]
PROBABILITY_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    return np.log(p) - np.log1p(-p)


class Calibration(Struct, kw_only=True):
    """A teacher version's score calibration, fitted by the batch phase (`distill_worker.debias`) and applied
    by the stream to every label it gets: Platt (a slope and an intercept on the logit) or isotonic (the
    fitted function's knots, interpolated linearly and clipped at the ends, as scikit-learn predicts).
    Saved beside the batch student as `teacher-calibration.msgpack`."""

    method: CalibrationMethod
    teacher_version: str
    ece_before: float = math.nan
    ece_after: float = math.nan
    slope: float = 1.0
    intercept: float = 0.0
    knots_x: list[float] = []
    knots_y: list[float] = []
    format: int = CALIBRATION_FORMAT

    def transform(self, teacher_probabilities: np.ndarray) -> np.ndarray:
        p = np.asarray(teacher_probabilities, dtype=np.float64)
        if self.method == "platt":
            out = 1.0 / (1.0 + np.exp(-(self.slope * logit(p) + self.intercept)))
        elif self.method == "isotonic":
            out = np.interp(p, self.knots_x, self.knots_y)
        else:
            out = p
        return out.astype(np.float32)

    def to_bytes(self) -> bytes:
        return msgspec.msgpack.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Calibration:
        """`DataError` naming the file for an unknown format or content that is not a calibration."""
        return decode_versioned(data, cls, CALIBRATION_FORMAT, f"{where}: teacher calibration", "upgrade the worker",
                                msgpack=True)


class DataWindow(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a version was trained on: the batch phase's training window (`train_events`), or the sampled
    requests a streamed version learned from since the version before it (count and server times)."""

    train_events: int | None = None
    sampled_requests: int | None = None
    first_served_unix: float | None = None
    last_served_unix: float | None = None

    def extended(self, served_unix: list[float]) -> DataWindow:
        """This window of sampled requests, and those served at these times."""
        if not served_unix:
            return self
        firsts = [t for t in (self.first_served_unix, min(served_unix)) if t is not None]
        lasts = [t for t in (self.last_served_unix, max(served_unix)) if t is not None]
        return DataWindow(sampled_requests=(self.sampled_requests or 0) + len(served_unix),
                          first_served_unix=min(firsts), last_served_unix=max(lasts))


class NonInferiority(Struct, frozen=True, kw_only=True):
    """A candidate's holdout AUC against a reference's, by a paired user-level bootstrap
    (`recdistill.core.bootstrap.non_inferiority`): non-inferior when the one-sided 95% lower bound of the
    difference lies above -margin, better when it lies above 0."""

    difference: float
    ci90: tuple[float, float]
    se: float
    margin: float  # the margin used: at least `margin_configured`, at least what the holdout can refuse
    margin_configured: float
    power_at_margin: float
    non_inferior: bool
    better: bool
    samples: int
    resamples: Literal["users"] = "users"
    version: str | None = None  # the reference version (the gate names it)
    undefined_draws: int = 0  # resamples without a positive or a negative (no AUC): left out of the interval


GateRole = Literal["active", "anchor"]


class GateMetrics(Struct, frozen=True, kw_only=True):
    """What the gate measured on a candidate; kept in its manifest (a lost gate-anchor.json is rebuilt from
    `anchored`), served by the operator API, read by the demo report."""

    parity_max_abs_diff: float | None = None  # PyTorch vs ONNX Runtime on the probe batch
    holdout: dict[str, float | None] = {}  # `core.evaluation.evaluate` on the gate's holdout (auc, gauc, ...)
    quality: dict[GateRole, NonInferiority] = {}  # against each reference the registry had
    reanchor: bool = False  # the first version, or significantly better than the anchor
    latency_p99_ms: float | None = None  # ONNX Runtime, the standard request of 100 candidates
    anchored: bool | None = None  # it became the gate's anchor (None: a manifest from before this field)

    @property
    def made_anchor(self) -> bool:
        return self.anchored if self.anchored is not None else self.reanchor

    @property
    def holdout_auc(self) -> float:
        """The holdout AUC (NaN when it was not measured or undefined)."""
        auc = self.holdout.get("auc")
        return math.nan if auc is None else float(auc)


class GateVerdict(Struct, frozen=True, kw_only=True):
    accepted: bool
    reasons: list[str] = []
    metrics: GateMetrics = msgspec.field(default_factory=GateMetrics)


class PublishResult(Struct, frozen=True, kw_only=True):
    """One candidate's way through the gate: the version it became (None: refused), and whether it was
    promoted through the operator API and became the gate's anchor."""

    version: str | None
    gate: GateVerdict
    promoted: bool = False
    anchored: bool = False


class DebiasReport(Struct, frozen=True, kw_only=True):
    """How a teacher's labels were debiased: its calibration (expected calibration error before and after, on
    the valid window) and, on negative-sampled slates, the keep rate their odds were mapped with."""

    method: CalibrationMethod
    ece_before: float
    ece_after: float
    negative_keep_rate: float | None = None


class BatchReport(Struct, kw_only=True, tag="batch", tag_field="kind"):
    """What `worker run --mode batch` did. Under torchrun every rank reports; only rank 0 evaluates and
    publishes (the others' reports stop at training)."""

    task: str
    teacher_version: str | None
    train_events: int
    distill: dict[str, Any]  # the DistillConfig trained with (the worker app's dataclass: the core cannot import it)
    processes: int = 1
    rank: int = 0
    label_hit_rate: float | None = None  # None: trained without a teacher
    debias: DebiasReport | None = None
    best_epoch: int | None = None
    valid: dict[str, float] | None = None  # the student's metrics (auc, ...) on the valid window
    test: dict[str, float] | None = None  # ... and on the test window
    published: PublishResult | None = None
    seconds: float | None = None
    train_seconds: float | None = None
    train_examples_per_s: float | None = None


class StreamState(Struct, kw_only=True):
    """Everything the stream must resume from; saved with the model in each checkpoint."""

    offsets: dict[str, int | str] = {}  # partition -> position (file: offset; redis: entry id)
    waiting: dict[str, bytes] = {}  # request_id -> the sampled request record
    feedback: dict[str, dict[str, float]] = {}  # request_id -> item_id -> label
    feedback_seen: dict[str, float] = {}  # request_id -> when its feedback came
    records_consumed: int = 0
    examples_trained: int = 0
    feedback_joined: int = 0
    unmatched_feedback: int = 0  # feedback with no waiting request: not sampled, or came after training
    dead_lettered: int = 0  # unreadable records and requests the teacher refused: in dead-letter.jsonl
    duplicates: int = 0  # records whose sample id was taken before (at-least-once delivery): skipped
    # Requests of the exploration slice (served in a random order): kept for unbiased evaluation, not trained
    # on (their feedback then counts as unmatched), unless StreamConfig.train_on_exploration.
    exploration_held_out: int = 0
    other_scenario: int = 0  # requests another scenario served: its own trainer trains them
    dense_rows_trained: int = 0  # dense candidates trained on (teacher labels only), beside the examples
    trained_ids: list[str] = []  # with StreamConfig.audit_trained_ids only
    since_export: int = 0
    # The sampled requests trained since the last published version: the next one's data window.
    unpublished: DataWindow = DataWindow(sampled_requests=0)
    versions_promoted: list[str] = []
    exports_refused: int = 0

    def progress(self) -> tuple[int, ...]:
        """Changes whenever a step changed anything a checkpoint holds."""
        return (self.records_consumed, self.examples_trained, self.dead_lettered, self.unmatched_feedback,
                self.duplicates, self.exploration_held_out, self.other_scenario, self.since_export,
                len(self.versions_promoted), self.exports_refused)

    def counters(self) -> StreamCounters:
        """The state without its working sets, which it counts instead: what a report shows. Every record
        consumed is in exactly one of: trained, held out (exploration), another scenario's, dead-lettered,
        duplicate, feedback joined, feedback unmatched, or still waiting (requests and feedback whose join window
        is open)."""
        return StreamCounters(
            offsets=dict(self.offsets), records_consumed=self.records_consumed,
            examples_trained=self.examples_trained, feedback_joined=self.feedback_joined,
            unmatched_feedback=self.unmatched_feedback, dead_lettered=self.dead_lettered,
            duplicates=self.duplicates, exploration_held_out=self.exploration_held_out,
            other_scenario=self.other_scenario, dense_rows_trained=self.dense_rows_trained,
            since_export=self.since_export,
            versions_promoted=list(self.versions_promoted),
            exports_refused=self.exports_refused, waiting_requests=len(self.waiting),
            waiting_feedback=sum(len(items) for items in self.feedback.values()))


class StreamCounters(Struct, frozen=True, kw_only=True):
    offsets: dict[str, int | str]
    records_consumed: int
    examples_trained: int
    feedback_joined: int
    unmatched_feedback: int
    dead_lettered: int
    duplicates: int
    exploration_held_out: int
    since_export: int
    versions_promoted: list[str]
    exports_refused: int
    waiting_requests: int
    waiting_feedback: int
    other_scenario: int = 0
    dense_rows_trained: int = 0


class Freshness(Struct, frozen=True, kw_only=True):
    """From serving a request to the first live version trained on it, over the requests of a run."""

    p50: float
    p95: float
    requests: int


class StreamReport(StreamCounters, frozen=True, kw_only=True, tag="stream", tag_field="kind"):
    """What `worker run --mode stream` did: the counters, the label store's hit rate (None without a
    teacher) and the freshness of what it published (None when nothing was)."""

    label_hit_rate: float | None = None
    freshness_s: Freshness | None = None
    label_version: str | None = None  # the teacher version whose labels it trained on (None: no teacher)
    # Label-log records set aside (unreadable, inconsistent, or for a request the sample log does not hold);
    # None: no label log.
    labels_dead_lettered: int | None = None


class StandbyReport(Struct, frozen=True, kw_only=True, tag="standby", tag_field="kind"):
    """A worker that stayed a hot standby to the end: another worker held the trainer lease."""

    holder: str | None


class StreamCheckpoint(Struct, kw_only=True):
    """`stream.pt` apart from its tensors: the state and when it was saved."""

    state: StreamState = field(default_factory=StreamState)
    saved_unix: float = 0.0
    format: int = CHECKPOINT_FORMAT

    def to_torch(self, model: dict[str, Any], optimizer: dict[str, Any]) -> dict[str, Any]:
        """What `torch.save` writes: the tensors as torch keeps them, this struct as msgpack bytes."""
        return {"format": self.format, "model": model, "optimizer": optimizer,
                "checkpoint": msgspec.msgpack.encode(self)}

    @classmethod
    def from_torch(cls, saved: dict[str, Any], where: str) -> StreamCheckpoint:
        """The struct of what `torch.load(..., weights_only=True)` read; `DataError` naming an unknown format."""
        found = saved.get("format", 1)
        if found == 1 and "state" in saved:  # before the format: the state as a plain dict
            return cls(state=msgspec.convert(saved["state"], StreamState), saved_unix=saved.get("saved_unix", 0.0))
        if found != CHECKPOINT_FORMAT:
            raise DataError(f"{where}: stream checkpoint format {found} is not supported: this worker knows format "
                            f"{CHECKPOINT_FORMAT}; upgrade the worker")
        return msgspec.msgpack.decode(saved["checkpoint"], type=cls)


DEAD_LETTER_FORMAT = 1


class DeadLetter(Struct, frozen=True, kw_only=True):
    """One line of a dead-letter file (`*dead-letter.jsonl`: the stream's, the labeller's, the label log's): a
    record set aside with the reason, for a person to look at; never retried."""

    reason: str
    dead_lettered_unix: float
    record_msgpack_b64: str  # the record as it was read (a sample-log or a label-log record)
    request_id: str = ""  # the sampled request's, where one could be read
    format: int = DEAD_LETTER_FORMAT
