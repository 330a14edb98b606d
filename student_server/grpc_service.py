"""gRPC `Ranking` services over the same core as HTTP: `recdistill.v3` (protos/ranking_v3.proto, columnar:
the cheaper one to read) and `recdistill.v2` (protos/ranking.proto, one message an event and a candidate),
served side by side so v2 clients keep working; the same request scores alike on both."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from recdistill.core._proto import ranking_pb2, ranking_v3_pb2
from recdistill.core.contracts.rank_grpc import request_from_message
from recdistill.core.contracts.rank_v3 import request_from_columns
from student_server import metrics
from student_server.errors import error_body, grpc_status, http_status
from student_server.scenarios import count_rank
from student_server.service import RankingService

logger = logging.getLogger(__name__)


class RankingServicer:
    """Both versions' methods: `Rank` reads the request with `read` (v2's typed maps or v3's columns) and answers
    with `response` (the version's `RankResponse`); `Feedback` is the same message in both."""

    def __init__(self, service: RankingService) -> None:
        self.service = service

    async def _fail(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        if http_status(exc) == 500:
            logger.exception("gRPC request failed", exc_info=exc)
        await context.abort(grpc_status(exc), error_body(exc).detail)

    async def rank(self, request: Any, context: grpc.aio.ServicerContext, read: Callable[[Any, Any], Any],
                   response: type) -> Any:
        started = time.perf_counter()
        scenario = None
        try:
            service = self.service
            scenario = service.scenarios.get(request.scenario if request.HasField("scenario") else None)
            source = None
            if service.reads_source:
                header = service.source_header.decode()
                source = service.traffic_source(
                    next((v for k, v in context.invocation_metadata() or () if k == header), None))
            result = await service.rank(read(request, service.request_types), scenario, source)
            answer = response(request_id=result.request_id, model_version=result.model_version,
                              scores=result.scores.tolist(), ranking=result.ranking, policy=result.policy,
                              scenario=result.scenario)
            if result.client_request_id is not None and response is ranking_v3_pb2.RankResponse:
                answer.client_request_id = result.client_request_id
        except Exception as exc:  # noqa: BLE001 - mapped to a status in one place
            # Counted before the status leaves: `abort` sends it, so a client that saw it finds it counted.
            count_rank(scenario, "grpc", grpc_status(exc).name, time.perf_counter() - started)
            await self._fail(context, exc)
            raise
        count_rank(scenario, "grpc", "OK", time.perf_counter() - started)
        return answer

    async def feedback(self, request: Any, context: grpc.aio.ServicerContext, response: type) -> Any:
        try:
            await self.service.feedback(request.request_id, request.item_id, request.label,
                                        request.ts if request.HasField("ts") else None)
        except Exception as exc:  # noqa: BLE001
            await self._fail(context, exc)
            raise
        return response(accepted=True)


def _handlers(servicer: RankingServicer, protocol: Any, read: Callable[[Any, Any], Any]) -> grpc.GenericRpcHandler:
    """One version's service (`protocol`: its generated module), with the request decoded inside the handler,
    so that a malformed message is answered INVALID_ARGUMENT (grpcio answers a failed deserializer with a
    bare UNKNOWN)."""

    def parsed(name: str, message_type: Any, method: Callable[..., Any], *args: Any):  # noqa: ANN202
        async def handler(payload: bytes, context: grpc.aio.ServicerContext):  # noqa: ANN202
            try:
                request = message_type.FromString(payload)
            except DecodeError as exc:
                metrics.count_request(name, "grpc", "INVALID_ARGUMENT")
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"body: not a valid {message_type.DESCRIPTOR.full_name} message ({exc})")
            return await method(request, context, *args)
        return handler

    methods = {
        "Rank": grpc.unary_unary_rpc_method_handler(
            parsed("rank", protocol.RankRequest, servicer.rank, read, protocol.RankResponse),
            response_serializer=protocol.RankResponse.SerializeToString),
        "Feedback": grpc.unary_unary_rpc_method_handler(
            parsed("feedback", protocol.FeedbackRequest, servicer.feedback, protocol.FeedbackResponse),
            response_serializer=protocol.FeedbackResponse.SerializeToString),
    }
    return grpc.method_handlers_generic_handler(protocol.DESCRIPTOR.services_by_name["Ranking"].full_name, methods)


async def start_grpc_server(service: RankingService, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", 8 << 20)])
    servicer = RankingServicer(service)
    server.add_generic_rpc_handlers((_handlers(servicer, ranking_v3_pb2, request_from_columns),
                                     _handlers(servicer, ranking_pb2, request_from_message)))
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound
