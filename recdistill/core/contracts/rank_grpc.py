"""The ranking request's two wire forms: the JSON body of `POST /v1/rank` and the gRPC `RankRequest`
(protos/ranking.proto, with features in typed maps so the proto is the same for every dataset).
`request_from_message` is the server's decoder for gRPC; `request_from_dict` is the client helper
(load tests, benchmarks, the demo's replay)."""

from __future__ import annotations

from typing import Any

from recdistill.core._proto import ranking_pb2
from recdistill.core.errors import ValidationError
from recdistill.core.features.request import MAX_CANDIDATES, MAX_HISTORY_EVENTS, RequestTypes


def _from_value(value: ranking_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return value.number_value
    if kind == "list_value":
        return list(value.list_value.values)
    return None


def _to_value(value: Any) -> ranking_pb2.Value:
    if isinstance(value, list | tuple):
        return ranking_pb2.Value(list_value=ranking_pb2.StringList(values=[str(v) for v in value]))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ranking_pb2.Value(string_value=str(value))
    return ranking_pb2.Value(number_value=float(value))


def request_from_message(message: ranking_pb2.RankRequest, types: RequestTypes) -> Any:
    """The ranking request a gRPC message carries, validated by the same structs as JSON: a map key the
    schema does not declare, a wrong type, NaN or infinity raise `ValidationError` naming the field
    (`user.age`, `candidates.3.features.genres`), as for HTTP."""
    if not message.HasField("user"):
        raise ValidationError("user", "missing")
    # Bounds first: the dict built below should never be larger than the protocol allows.
    if len(message.candidates) > MAX_CANDIDATES:
        raise ValidationError("candidates", f"{len(message.candidates)} candidates, at most {MAX_CANDIDATES}")
    if len(message.history) > MAX_HISTORY_EVENTS:
        raise ValidationError("history", f"{len(message.history)} events, at most {MAX_HISTORY_EVENTS}")
    user = {key: _from_value(value) for key, value in message.user.features.items()}
    for key in ("user_id",):
        if key in user:
            raise ValidationError(f"user.features.{key}", "is a field of its own, not a feature")
    body: dict[str, Any] = {"user": {"user_id": message.user.user_id, **user}, "candidates": []}
    history = []
    for event in message.history:  # the hot loop: one HasField lookup an event, the common action inline
        entry: dict[str, Any] = {"item_id": event.item_id}
        has = event.HasField
        if has("ts"):
            entry["ts"] = event.ts
        if has("action"):
            action = event.action
            entry["action"] = action.string_value if action.WhichOneof("kind") == "string_value" \
                else _from_value(action)
        if has("value"):
            entry["value"] = event.value
        history.append(entry)
    if history:
        body["history"] = history
    for candidate in message.candidates:
        entry = {"item_id": candidate.item_id}
        if candidate.features:
            entry["features"] = {key: _from_value(value) for key, value in candidate.features.items()}
        body["candidates"].append(entry)
    if message.HasField("request_id"):
        body["request_id"] = message.request_id
    if message.HasField("context"):
        context = {key: _from_value(value) for key, value in message.context.features.items()}
        if "ts" in context:
            raise ValidationError("context.features.ts", "is a field of its own, not a feature")
        if message.context.HasField("ts"):
            context["ts"] = message.context.ts
        body["context"] = context
    return types.parse(body)


def request_from_dict(body: dict[str, Any]) -> ranking_pb2.RankRequest:
    """The gRPC message for a `/v1/rank` JSON body (clients, load tests); ids become strings."""
    user = dict(body["user"])
    user_id = str(user.pop("user_id"))
    history = []
    for event in body.get("history", []):
        message = ranking_pb2.HistoryEvent(item_id=str(event["item_id"]))
        if event.get("ts") is not None:
            message.ts = event["ts"]
        if event.get("action") is not None:
            message.action.CopyFrom(_to_value(str(event["action"])))
        if event.get("value") is not None:
            message.value = event["value"]
        history.append(message)
    message = ranking_pb2.RankRequest(
        user=ranking_pb2.User(user_id=user_id, features={k: _to_value(v) for k, v in user.items() if v is not None}),
        history=history,
        candidates=[ranking_pb2.Candidate(item_id=str(c["item_id"]),
                                          features={k: _to_value(v) for k, v in (c.get("features") or {}).items()
                                                    if v is not None})
                    for c in body["candidates"]],
    )
    if "request_id" in body:
        message.request_id = body["request_id"]
    context = dict(body.get("context") or {})
    if context:
        ts = context.pop("ts", None)
        message.context.SetInParent()
        if ts is not None:
            message.context.ts = ts
        for key, value in context.items():
            if value is not None:
                message.context.features[key].CopyFrom(_to_value(value))
    return message
