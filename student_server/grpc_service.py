"""gRPC `Ranking` service (protos/ranking.proto) over the same core as HTTP."""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc

from recdistill._proto import ranking_pb2, ranking_pb2_grpc
from recdistill.features.request import parse_rank_request
from student_server import metrics
from student_server.errors import error_body, grpc_status, http_status
from student_server.service import RankingService

logger = logging.getLogger(__name__)


def request_to_dict(message: ranking_pb2.RankRequest) -> dict[str, Any]:
    """The JSON-shaped body of a gRPC request, so both protocols validate and encode identically."""
    user: dict[str, Any] = {"user_id": message.user.user_id}
    for name in ("age", "gender", "occupation", "zip_code"):
        if message.user.HasField(name):
            user[name] = getattr(message.user, name)
    history = []
    for event in message.history:
        item: dict[str, Any] = {"item_id": event.item_id}
        if event.HasField("ts"):
            item["ts"] = event.ts
        if event.HasField("action"):
            item["action"] = event.action
        history.append(item)
    candidates = []
    for candidate in message.candidates:
        entry: dict[str, Any] = {"item_id": candidate.item_id}
        if candidate.HasField("features"):
            features: dict[str, Any] = {}
            if candidate.features.genres:
                features["genres"] = list(candidate.features.genres)
            if candidate.features.HasField("release_year"):
                features["release_year"] = candidate.features.release_year
            entry["features"] = features
        candidates.append(entry)
    body: dict[str, Any] = {"user": user, "history": history, "candidates": candidates}
    if message.HasField("request_id"):
        body["request_id"] = message.request_id
    if message.HasField("context") and message.context.HasField("ts"):
        body["context"] = {"ts": message.context.ts}
    if not message.HasField("user"):
        body.pop("user")
    return body


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
            result = await self.service.rank(parse_rank_request(request_to_dict(request)))
            return ranking_pb2.RankResponse(request_id=result.request_id, model_version=result.model_version,
                                            scores=result.scores.tolist(), ranking=result.ranking)
        except Exception as exc:  # noqa: BLE001 - mapped to a status in one place
            status = grpc_status(exc).name
            await self._fail(context, exc)
            raise
        finally:
            metrics.LATENCY.labels(endpoint="rank", protocol="grpc").observe(time.perf_counter() - started)
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
