"""Sample-log records: sampled ranking requests and delayed feedback, msgpack-encoded, versioned.

Every record carries `format`; a reader that meets a format it does not know stops with
`RecordFormatError` naming it (never guesses). A new field with a default is a compatible change
(old readers ignore it, new readers fill the default); anything else bumps `RECORD_FORMAT`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from msgspec import Meta, Struct

from recdistill.core.errors import RecDistillError

RECORD_FORMAT = 1


class RecordFormatError(RecDistillError):
    """A sample-log record is in a format this reader does not know: stop, upgrade the reader."""


class InvalidRecordError(RecDistillError):
    """A sample-log record that cannot be read as any record (garbage, or content out of its bounds):
    one bad record, to be set aside, not a reason to stop."""


R = TypeVar("R")


class SampledRequest(Struct, Generic[R], tag="request", tag_field="kind", frozen=True):
    """A served ranking request the sampler kept, with what the student answered. `request` is the request
    struct of the serving schema (`RequestTypes.rank_request`); read without one, it is a plain dict."""

    request_id: str
    ts: float  # when it was served (unix seconds, server clock)
    request_ts: float  # the request's own time (its context.ts, else `ts`)
    model_version: str
    sampling_probability: Annotated[float, Meta(gt=0, le=1)]
    request: R
    student_view: str
    scores: list[float]  # per candidate, request order
    positions: list[int]  # 0-based rank of each candidate in the served ranking, request order
    policy: str = "model"  # "model", or "random": the exploration slice (a uniformly random order)
    traffic_source: str | None = None  # the caller's traffic source, when the sampling rules read one
    format: int = RECORD_FORMAT

    def __post_init__(self) -> None:
        """Every field agrees before any reaches a tensor (checked on decode too: a record that does not is
        invalid, dead-lettered by its reader, never trained on): finite times and scores, one score and one
        position per candidate, the positions a ranking of them."""
        _finite(ts=self.ts, request_ts=self.request_ts)
        request = self.request
        candidates = request.get("candidates") if isinstance(request, dict) else getattr(request, "candidates", None)
        count = len(candidates) if isinstance(candidates, list) else None
        if count is not None and not len(self.scores) == len(self.positions) == count:
            raise ValueError(f"{count} candidates but {len(self.scores)} scores and {len(self.positions)} positions")
        if not all(map(math.isfinite, self.scores)):
            raise ValueError("scores must be finite")
        if sorted(self.positions) != list(range(len(self.positions))):
            raise ValueError("positions must rank the candidates: each of 0 .. n-1 once")


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
_decoders: dict[Any, msgspec.msgpack.Decoder] = {}


def encode_record(record: SampleRecord) -> bytes:
    """msgpack bytes of a record; raises (TypeError, OverflowError, ...) for content msgpack cannot hold."""
    return _encoder.encode(record)


def decode_record(payload: bytes, request_type: type | None = None) -> SampleRecord:
    """The record in `payload`; a sampled request's `request` as `request_type` (the schema's request
    struct, validated as at the edge) or, without one, as a dict."""
    decoder = _decoders.get(request_type)
    if decoder is None:
        shape = SampledRequest[request_type] if request_type is not None else SampledRequest  # type: ignore[valid-type]
        decoder = _decoders[request_type] = msgspec.msgpack.Decoder(shape | FeedbackRecord)  # type: ignore[operator]
    try:
        envelope = _envelope.decode(payload)
    except msgspec.DecodeError as exc:
        raise InvalidRecordError(f"not a sample-log record ({exc})") from None
    if envelope.format != RECORD_FORMAT:
        raise RecordFormatError(f"sample-log record format {envelope.format} (kind {envelope.kind!r}) is not "
                                f"supported: this reader knows format {RECORD_FORMAT}; upgrade the reader")
    try:
        return decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise InvalidRecordError(f"invalid sample-log record of format {RECORD_FORMAT}: {exc}") from None
