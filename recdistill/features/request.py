"""The ranking request (`POST /v1/rank` JSON body; the gRPC `RankRequest` mirrors it).

Ids may be strings or integers and are compared as strings. Extra fields are refused so that a
typo does not silently become a missing feature. History events are oldest first.
"""

from __future__ import annotations

from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from recdistill.errors import ValidationError

Id = StrictStr | StrictInt
Number = StrictInt | StrictFloat
# Protocol limits; servers may configure lower ones (see `check_limits`).
MAX_HISTORY_EVENTS = 20_000
MAX_CANDIDATES = 1_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class User(_Strict):
    user_id: Id
    age: Number | None = None
    gender: StrictStr | None = None
    occupation: StrictStr | None = None
    zip_code: StrictStr | None = None


class HistoryEvent(_Strict):
    item_id: Id
    ts: Number | None = Field(default=None, description="unix seconds")
    action: StrictStr | Number | None = Field(default=None, description="e.g. the rating given")


class ItemFeatures(_Strict):
    genres: list[StrictStr] | None = None
    release_year: Number | None = None


class Candidate(_Strict):
    item_id: Id
    features: ItemFeatures | None = Field(
        default=None, description="overrides the catalogue's side features of this item"
    )


class RequestContext(_Strict):
    model_config = ConfigDict(extra="allow", frozen=True)
    ts: Number | None = Field(default=None, description="request time, unix seconds; default: now")


class RankRequest(_Strict):
    user: User
    history: Annotated[list[HistoryEvent], Field(max_length=MAX_HISTORY_EVENTS)] = []
    candidates: Annotated[list[Candidate], Field(min_length=1, max_length=MAX_CANDIDATES)]
    request_id: StrictStr | None = Field(default=None, max_length=128)
    context: RequestContext | None = None


# Pydantic adds the union member tried ("str", "int", ...) to error locations; they are not fields.
_UNION_TAGS = {"str", "int", "float", "bool", "none"}


def field_path(location: tuple[Any, ...]) -> str:
    parts = [str(p) for p in location if not (isinstance(p, str) and (p in _UNION_TAGS or "[" in p or "-" in p))]
    return ".".join(parts) or "body"


def parse_rank_request(body: bytes | str | dict[str, Any]) -> RankRequest:
    """Validate a ranking request; raise `ValidationError` naming the first field at fault."""
    try:
        if isinstance(body, dict):
            return RankRequest.model_validate(body)
        return RankRequest.model_validate_json(body)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = field_path(first["loc"])
        if first["type"] == "json_invalid":
            field = "body"
        raise ValidationError(field, first["msg"]) from None


def check_limits(request: RankRequest, max_candidates: int, max_history: int) -> None:
    """Apply a server's configured limits (at most the protocol limits)."""
    if len(request.candidates) > max_candidates:
        raise ValidationError("candidates", f"{len(request.candidates)} candidates, at most {max_candidates}")
    if len(request.history) > max_history:
        raise ValidationError("history", f"{len(request.history)} events, at most {max_history}")
