"""The ranking request's two wire forms: the JSON body of `POST /v1/rank` and the gRPC `RankRequest`
(protos/ranking.proto). `request_from_message` is the server's decoder for gRPC;
`request_from_dict` is the client helper (load tests, benchmarks, the demo's replay)."""

from __future__ import annotations

from typing import Any

from recdistill.core._proto import ranking_pb2
from recdistill.core.errors import ValidationError
from recdistill.core.features.request import (
    MAX_CANDIDATES,
    MAX_HISTORY_EVENTS,
    NUMBER_BOUND,
    REQUEST_ID_MAX_LENGTH,
    TS_MAX,
    Candidate,
    HistoryEvent,
    ItemFeatures,
    RankRequest,
    RequestContext,
    User,
)


def request_from_message(message: ranking_pb2.RankRequest) -> RankRequest:
    """The ranking request a gRPC message carries, built without a JSON-shaped detour.

    Protobuf has already typed every field; what is left to check are the constraints the JSON
    decoder applies from `RankRequest`'s declaration (the server's own limits come after, in
    `check_limits`, as for HTTP).
    """
    if not message.HasField("user"):
        raise ValidationError("user", "missing")
    if not message.candidates:
        raise ValidationError("candidates", "at least one candidate is required")
    if len(message.candidates) > MAX_CANDIDATES:
        raise ValidationError("candidates", f"{len(message.candidates)} candidates, at most {MAX_CANDIDATES}")
    if len(message.history) > MAX_HISTORY_EVENTS:
        raise ValidationError("history", f"{len(message.history)} events, at most {MAX_HISTORY_EVENTS}")
    if message.HasField("request_id") and len(message.request_id) > REQUEST_ID_MAX_LENGTH:
        raise ValidationError("request_id", f"longer than {REQUEST_ID_MAX_LENGTH} characters")
    user = message.user
    return RankRequest(
        user=User(user_id=user.user_id,
                  age=_bounded(user.age, "user.age", -NUMBER_BOUND) if user.HasField("age") else None,
                  gender=user.gender if user.HasField("gender") else None,
                  occupation=user.occupation if user.HasField("occupation") else None,
                  zip_code=user.zip_code if user.HasField("zip_code") else None),
        history=[HistoryEvent(item_id=event.item_id,
                              ts=_bounded(event.ts, f"history.{i}.ts", 0, TS_MAX) if event.HasField("ts") else None,
                              action=event.action if event.HasField("action") else None)
                 for i, event in enumerate(message.history)],
        candidates=[Candidate(item_id=candidate.item_id, features=_features(candidate, i))
                    for i, candidate in enumerate(message.candidates)],
        request_id=message.request_id if message.HasField("request_id") else None,
        context=RequestContext(ts=_bounded(message.context.ts, "context.ts", 0, TS_MAX)
                               if message.context.HasField("ts") else None)
        if message.HasField("context") else None,
    )


def _bounded(value: float, field: str, low: float, high: float = NUMBER_BOUND) -> float:
    """The JSON decoder's numeric bounds, for a protobuf double (which may also be NaN or infinite)."""
    if not low <= value <= high:  # also false for NaN
        raise ValidationError(field, f"{value} is not a finite number in [{low:g}, {high:g}]")
    return value


def _features(candidate: ranking_pb2.Candidate, index: int) -> ItemFeatures | None:
    if not candidate.HasField("features"):
        return None
    features = candidate.features
    year = features.release_year if features.HasField("release_year") else None
    return ItemFeatures(genres=list(features.genres) or None,
                        release_year=None if year is None else _bounded(
                            year, f"candidates.{index}.features.release_year", -NUMBER_BOUND))


def request_from_dict(body: dict[str, Any]) -> ranking_pb2.RankRequest:
    """The gRPC message for a `/v1/rank` JSON body (clients, load tests); ids and actions become strings."""
    user = body["user"]
    message = ranking_pb2.RankRequest(
        user=ranking_pb2.User(**{k: (str(v) if k in ("user_id",) else v) for k, v in user.items()}),
        history=[ranking_pb2.HistoryEvent(**{k: (str(v) if k in ("item_id", "action") else v)
                                             for k, v in event.items()}) for event in body.get("history", [])],
        candidates=[ranking_pb2.Candidate(item_id=str(c["item_id"]),
                                          features=ranking_pb2.ItemFeatures(**c["features"]) if "features" in c
                                          else None) for c in body["candidates"]],
    )
    if "request_id" in body:
        message.request_id = body["request_id"]
    if body.get("context", {}).get("ts") is not None:
        message.context.ts = body["context"]["ts"]
    return message
