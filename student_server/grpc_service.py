"""gRPC `Ranking` service (protos/ranking.proto) over the same core as HTTP."""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc

from recdistill._proto import ranking_pb2, ranking_pb2_grpc
from recdistill.errors import ValidationError
from recdistill.features.request import (
    MAX_CANDIDATES,
    MAX_HISTORY_EVENTS,
    REQUEST_ID_MAX_LENGTH,
    Candidate,
    HistoryEvent,
    ItemFeatures,
    RankRequest,
    RequestContext,
    User,
)
from student_server import metrics
from student_server.errors import error_body, grpc_status, http_status
from student_server.service import RankingService

logger = logging.getLogger(__name__)


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
                  age=user.age if user.HasField("age") else None,
                  gender=user.gender if user.HasField("gender") else None,
                  occupation=user.occupation if user.HasField("occupation") else None,
                  zip_code=user.zip_code if user.HasField("zip_code") else None),
        history=[HistoryEvent(item_id=event.item_id,
                              ts=event.ts if event.HasField("ts") else None,
                              action=event.action if event.HasField("action") else None)
                 for event in message.history],
        candidates=[Candidate(item_id=candidate.item_id, features=_features(candidate))
                    for candidate in message.candidates],
        request_id=message.request_id if message.HasField("request_id") else None,
        context=RequestContext(ts=message.context.ts if message.context.HasField("ts") else None)
        if message.HasField("context") else None,
    )


def _features(candidate: ranking_pb2.Candidate) -> ItemFeatures | None:
    if not candidate.HasField("features"):
        return None
    features = candidate.features
    return ItemFeatures(genres=list(features.genres) or None,
                        release_year=features.release_year if features.HasField("release_year") else None)


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


class RankingServicer(ranking_pb2_grpc.RankingServicer):
    def __init__(self, service: RankingService) -> None:
        self.service = service

    async def _fail(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        if http_status(exc) == 500:
            logger.exception("gRPC request failed", exc_info=exc)
        body = error_body(exc)
        detail = f"{body['field']}: {body['error']}" if "field" in body else str(body["error"])
        await context.abort(grpc_status(exc), detail)

    async def Rank(self, request: ranking_pb2.RankRequest,  # noqa: N802 - gRPC method name
                   context: grpc.aio.ServicerContext) -> ranking_pb2.RankResponse:
        started = time.perf_counter()
        status = "ok"
        try:
            result = await self.service.rank(request_from_message(request))
            return ranking_pb2.RankResponse(request_id=result.request_id, model_version=result.model_version,
                                            scores=result.scores.tolist(), ranking=result.ranking)
        except Exception as exc:  # noqa: BLE001 - mapped to a status in one place
            status = grpc_status(exc).name
            await self._fail(context, exc)
            raise
        finally:
            metrics.RANK_GRPC_LATENCY.observe(time.perf_counter() - started)
            metrics.REQUESTS.labels(endpoint="rank", protocol="grpc", status=status).inc()

    async def Feedback(self, request: ranking_pb2.FeedbackRequest,  # noqa: N802 - gRPC method name
                       context: grpc.aio.ServicerContext) -> ranking_pb2.FeedbackResponse:
        try:
            await self.service.feedback(request.request_id, request.item_id, request.label,
                                        request.ts if request.HasField("ts") else None)
        except Exception as exc:  # noqa: BLE001
            await self._fail(context, exc)
            raise
        return ranking_pb2.FeedbackResponse(accepted=True)


async def start_grpc_server(service: RankingService, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", 8 << 20)])
    ranking_pb2_grpc.add_RankingServicer_to_server(RankingServicer(service), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound
