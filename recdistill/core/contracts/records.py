"""Sample-log records: sampled ranking requests and delayed feedback, msgpack-encoded, versioned.

Every record carries `format`; a reader that meets a format it does not know stops with
`RecordFormatError` naming it (never guesses). A new field with a default is a compatible change
(old readers ignore it, new readers fill the default); anything else bumps `RECORD_FORMAT`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
import numpy as np
from msgspec import Meta, Struct

from recdistill.core.errors import RecDistillError
from recdistill.core.features.request import decode_accepted

RECORD_FORMAT = 3  # 2: the request as its JSON, scores and positions packed; 3: no `student_view`
READABLE_FORMATS = (2, 3)  # a format-2 record still reads: its `student_view` (read by nothing) is skipped


class RecordFormatError(RecDistillError):
    """A sample-log record is in a format this reader does not know: stop, upgrade the reader."""


class InvalidRecordError(RecDistillError):
    """A sample-log record that cannot be read as any record (garbage, or content out of its bounds):
    one bad record, to be set aside, not a reason to stop."""


R = TypeVar("R")
Policy = Literal["model", "random"]  # "random": the exploration slice (a uniformly random order)


class SampledRequest(Struct, Generic[R], tag="request", tag_field="kind", frozen=True):
    """A served ranking request the sampler kept, with what the student answered.

    `request` is written as the request's JSON, in the form the HTTP API takes (an HTTP body as it came, a gRPC
    request encoded so), so the server neither re-encodes nor keeps the parsed request; `decode_record` reads
    it back as the request struct of the serving schema (validated as at the edge) or, without one, a plain
    dict. Scores and positions are packed little-endian (float32, int32), one per candidate in request order:
    `score_array` and `position_array` read them. A record is checked where it is read (`decode_record`, which
    calls `check`): one that does not agree is invalid, dead-lettered by its reader, never trained on."""

    request_id: str
    ts: float  # when it was served (unix seconds, server clock)
    request_ts: float  # the request's own time (its context.ts, else `ts`)
    model_version: str
    sampling_probability: Annotated[float, Meta(gt=0, le=1)]
    request: R
    scores: bytes  # float32 little-endian per candidate, request order
    positions: bytes  # int32 little-endian: each candidate's 0-based rank in the served ranking, request order
    policy: Policy = "model"
    traffic_source: str | None = None  # the caller's traffic source, when the sampling rules read one
    scenario: str | None = None  # the scenario that served it (None: written before scenarios, the first)
    # `request_id` is the server's own (unique); the client's, when it sent one, is kept here and keys nothing.
    client_request_id: str | None = None
    format: int = RECORD_FORMAT

    @property
    def score_array(self) -> np.ndarray:
        return np.frombuffer(self.scores, dtype="<f4")

    @property
    def position_array(self) -> np.ndarray:
        return np.frombuffer(self.positions, dtype="<i4")

    def check(self) -> None:
        """Every field agrees before any reaches a tensor (ValueError naming what does not): finite times and
        scores, one score and one position per candidate, the positions a ranking of them."""
        _finite(ts=self.ts, request_ts=self.request_ts)
        request = self.request
        candidates = request.get("candidates") if isinstance(request, dict) else getattr(request, "candidates", None)
        if len(self.scores) % 4 or len(self.positions) % 4:
            raise ValueError("scores and positions must be packed 4-byte values")
        scores, positions = self.score_array, self.position_array
        count = len(candidates) if isinstance(candidates, list) else len(scores)
        if not len(scores) == len(positions) == count:
            raise ValueError(f"{count} candidates but {len(scores)} scores and {len(positions)} positions")
        if not np.isfinite(scores).all():
            raise ValueError("scores must be finite")
        if count and not (positions.min() >= 0 and positions.max() < count
                          and (np.bincount(positions, minlength=count) == 1).all()):
            raise ValueError("positions must rank the candidates: each of 0 .. n-1 once")

    @staticmethod
    def pack(scores: np.ndarray, order: np.ndarray) -> tuple[bytes, bytes]:
        """(scores, positions) as stored, from the scores and the served order (candidate indices, best
        first)."""
        positions = np.empty(len(order), dtype="<i4")
        positions[order] = np.arange(len(order), dtype="<i4")
        return scores.astype("<f4", copy=False).tobytes(), positions.tobytes()


class FeedbackRecord(Struct, tag="feedback", tag_field="kind", frozen=True):
    """A delayed label for one served request and item."""

    request_id: str
    item_id: str
    label: Annotated[float, Meta(ge=0, le=1)]
    ts: float  # when it happened
    received_ts: float  # when the server got it
    format: int = RECORD_FORMAT

    def __post_init__(self) -> None:
        _finite(ts=self.ts, received_ts=self.received_ts)


def _finite(**times: float) -> None:
    for name, value in times.items():
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite time, got {value}")


SampleRecord = SampledRequest | FeedbackRecord


class _Envelope(Struct):
    """What every format has: read first, so an unknown format is named rather than mis-decoded."""

    format: int
    kind: str


_encoder = msgspec.msgpack.Encoder()
_envelope = msgspec.msgpack.Decoder(_Envelope)
_records = msgspec.msgpack.Decoder(SampledRequest[bytes] | FeedbackRecord)
_requests: dict[Any, msgspec.json.Decoder] = {}


def encode_record(record: SampleRecord) -> bytes:
    """msgpack bytes of a record; raises (TypeError, OverflowError, ...) for content msgpack cannot hold."""
    return _encoder.encode(record)


def decode_record(payload: bytes, request_type: type | None = None) -> SampleRecord:
    """The record in `payload`, checked; a sampled request's `request` as `request_type` (the schema's request
    struct, validated as at the edge) or, without one, as a dict. `InvalidRecordError` for one that cannot be
    read or does not agree, `RecordFormatError` for a format this reader does not know."""
    try:
        envelope = _envelope.decode(payload)
    except msgspec.DecodeError as exc:
        raise InvalidRecordError(f"not a sample-log record ({exc})") from None
    if envelope.format not in READABLE_FORMATS:
        raise RecordFormatError(f"sample-log record format {envelope.format} (kind {envelope.kind!r}) is not "
                                f"supported: this reader knows formats {', '.join(map(str, READABLE_FORMATS))}; "
                                f"upgrade the reader")
    try:
        record = _records.decode(payload)
    except msgspec.DecodeError as exc:
        raise InvalidRecordError(f"invalid sample-log record of format {envelope.format}: {exc}") from None
    if isinstance(record, FeedbackRecord):
        return record
    decoder = _requests.get(request_type)
    if decoder is None:
        decoder = _requests[request_type] = msgspec.json.Decoder(request_type or Any)
    try:
        request = decode_accepted(record.request, request_type, decoder) if request_type is not None \
            else decoder.decode(record.request)
        record = msgspec.structs.replace(record, request=request)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidRecordError(f"invalid sampled request {record.request_id!r}: its request JSON: {exc}") from None
    try:
        record.check()
    except ValueError as exc:
        raise InvalidRecordError(f"invalid sampled request {record.request_id!r}: {exc}") from None
    return record
