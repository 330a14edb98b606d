"""The label log's records: the teacher's soft labels for one example, keyed by example, candidate and teacher
version, msgpack-encoded and versioned like the sample log's records (`records.py`).

Written once, by the labeller (`recdistill worker label`) or by whichever trainer asked the teacher first; every
other trainer (another scenario's, a restarted one, one on another host) reads them from the log instead of
calling the teacher again."""

from __future__ import annotations

import math
from typing import Literal

import msgspec
import numpy as np
from msgspec import Struct

from recdistill.core.contracts.records import InvalidRecordError, RecordFormatError

LABEL_FORMAT = 1


class TeacherLabels(Struct, frozen=True, kw_only=True):
    example_id: str  # a sampled request's id, or a training-window event's `dataset:task:event`
    teacher_version: str
    candidates: list[str]  # item ids, in the order of `probabilities`
    probabilities: bytes  # float32 little-endian, one per candidate
    created_unix: float
    # "request": a sampled request's (a trainer that never reads that request dead-letters it); "window": a
    # training-window event's, written by a batch phase.
    origin: Literal["request", "window"] = "request"
    # The teacher refused the example (the labeller's record of it, with the reason): no candidates, no
    # probabilities; a trainer reading the log sets the example aside with this reason instead of waiting.
    refused: str | None = None
    format: int = LABEL_FORMAT

    @classmethod
    def of(cls, example_id: str, teacher_version: str, candidates: list[str], probabilities: np.ndarray,
           created_unix: float, origin: Literal["request", "window"] = "request") -> TeacherLabels:
        return cls(example_id=example_id, teacher_version=teacher_version, candidates=candidates,
                   probabilities=np.asarray(probabilities, dtype="<f4").tobytes(), created_unix=created_unix,
                   origin=origin)

    @classmethod
    def refusal(cls, example_id: str, teacher_version: str, reason: str, created_unix: float) -> TeacherLabels:
        return cls(example_id=example_id, teacher_version=teacher_version, candidates=[], probabilities=b"",
                   created_unix=created_unix, refused=reason)

    @property
    def array(self) -> np.ndarray:
        return np.frombuffer(self.probabilities, dtype="<f4")

    def check(self) -> None:
        """ValueError naming what does not agree: one finite probability in [0, 1] per candidate."""
        if not self.example_id or not self.teacher_version:
            raise ValueError("an empty example id or teacher version")
        if self.refused is not None:
            if self.candidates or self.probabilities or not self.refused:
                raise ValueError("a refusal carries its reason and no candidates or probabilities")
            return
        if len(self.probabilities) % 4:
            raise ValueError("probabilities must be packed 4-byte floats")
        values = self.array
        if len(values) != len(self.candidates) or not values.size:
            raise ValueError(f"{len(values)} probabilities for {len(self.candidates)} candidates")
        if not np.all(np.isfinite(values) & (values >= 0) & (values <= 1)):
            raise ValueError("a probability that is not finite or not in [0, 1]")
        if not math.isfinite(self.created_unix):
            raise ValueError("created_unix must be finite")


class _Format(Struct):
    format: int


_encoder = msgspec.msgpack.Encoder()
_format = msgspec.msgpack.Decoder(_Format)
_labels = msgspec.msgpack.Decoder(TeacherLabels)


def encode_labels(labels: TeacherLabels) -> bytes:
    return _encoder.encode(labels)


def decode_labels(payload: bytes) -> TeacherLabels:
    """The checked record; `InvalidRecordError` (set aside with its reason) or `RecordFormatError` (stop)."""
    try:
        found = _format.decode(payload).format
    except msgspec.DecodeError as exc:
        raise InvalidRecordError(f"not a label-log record ({exc})") from None
    if found != LABEL_FORMAT:
        raise RecordFormatError(f"label-log record format {found} is not supported: this reader knows format "
                                f"{LABEL_FORMAT}; upgrade the reader")
    try:
        labels = _labels.decode(payload)
        labels.check()
    except (msgspec.DecodeError, ValueError) as exc:
        raise InvalidRecordError(f"invalid teacher labels: {exc}") from None
    return labels


class LabellerReport(Struct, kw_only=True, tag="labeller", tag_field="kind"):
    """What `recdistill worker label` did. Every record read is one of: a request labelled now, a request whose
    labels the log already held (no teacher call), a feedback record (nothing to label) or a dead letter (an
    unreadable record, or a request the teacher refused). `teacher_requests`: contexts sent to the teacher;
    `teacher_candidates`: candidates in them (the served ones and the dense ones: the teacher's cost)."""

    records_read: int = 0
    labelled: int = 0
    already_labelled: int = 0
    feedback: int = 0
    dead_lettered: int = 0
    teacher_requests: int = 0
    teacher_candidates: int = 0
    teacher_version: str = ""
    label_log: str = ""

    @property
    def adds_up(self) -> bool:
        return self.records_read == self.labelled + self.already_labelled + self.feedback + self.dead_lettered

    @property
    def candidates_a_request(self) -> float | None:
        """Teacher candidates a labelled request (the cost of dense labelling)."""
        return self.teacher_candidates / self.teacher_requests if self.teacher_requests else None
