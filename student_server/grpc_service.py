"""gRPC `Ranking` service (protos/ranking.proto) over the same core as HTTP."""

from __future__ import annotations

import logging
import time

import grpc
from google.protobuf.message import DecodeError

from recdistill.core._proto import ranking_pb2, ranking_pb2_grpc
from recdistill.core.contracts.rank_grpc import request_from_message
from student_server import metrics
from student_server.errors import error_body, grpc_status, http_status
from student_server.scenarios import UNKNOWN
from student_server.service import RankingService

logger = logging.getLogger(__name__)


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
        status, scenario = "OK", None
        try:
            service = self.service
            scenario = service.scenarios.get(request.scenario if request.HasField("scenario") else None)
            source = None
            if service.reads_source:
                header = service.source_header.decode()
                source = service.traffic_source(
                    next((v for k, v in context.invocation_metadata() or () if k == header), None))
            result = await service.rank(request_from_message(request, service.request_types), scenario, source)
            return ranking_pb2.RankResponse(request_id=result.request_id, model_version=result.model_version,
                                            scores=result.scores.tolist(), ranking=result.ranking,
                                            policy=result.policy, scenario=result.scenario)
        except Exception as exc:  # noqa: BLE001 - mapped to a status in one place
            status = grpc_status(exc).name
            await self._fail(context, exc)
            raise
        finally:
            if scenario is None:
                metrics.count_request("rank", "grpc", status, UNKNOWN)
            else:
                scenario.children["grpc_latency"].observe(time.perf_counter() - started)
                if status == "OK":
                    scenario.children["grpc_ok"].inc()
                else:
                    metrics.count_request("rank", "grpc", status, scenario.name)

    async def Feedback(self, request: ranking_pb2.FeedbackRequest,  # noqa: N802 - gRPC method name
                       context: grpc.aio.ServicerContext) -> ranking_pb2.FeedbackResponse:
        try:
            await self.service.feedback(request.request_id, request.item_id, request.label,
                                        request.ts if request.HasField("ts") else None)
        except Exception as exc:  # noqa: BLE001
            await self._fail(context, exc)
            raise
        return ranking_pb2.FeedbackResponse(accepted=True)


def _handlers(servicer: RankingServicer) -> grpc.GenericRpcHandler:
    """The service's methods with the request decoded inside the handler, so that a malformed message is
    answered INVALID_ARGUMENT (grpcio answers a failed deserializer with a bare UNKNOWN)."""

    def parsed(method, message_type):  # noqa: ANN001, ANN202
        async def handler(payload: bytes, context: grpc.aio.ServicerContext):  # noqa: ANN202
            try:
                request = message_type.FromString(payload)
            except DecodeError as exc:
                metrics.count_request(method.__name__.lower(), "grpc", "INVALID_ARGUMENT")
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"body: not a valid {message_type.DESCRIPTOR.full_name} message ({exc})")
            return await method(request, context)
        return handler

    methods = {
        "Rank": grpc.unary_unary_rpc_method_handler(
            parsed(servicer.Rank, ranking_pb2.RankRequest),
            response_serializer=ranking_pb2.RankResponse.SerializeToString),
        "Feedback": grpc.unary_unary_rpc_method_handler(
            parsed(servicer.Feedback, ranking_pb2.FeedbackRequest),
            response_serializer=ranking_pb2.FeedbackResponse.SerializeToString),
    }
    return grpc.method_handlers_generic_handler(ranking_pb2.DESCRIPTOR.services_by_name["Ranking"].full_name,
                                                methods)


async def start_grpc_server(service: RankingService, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", 8 << 20)])
    server.add_generic_rpc_handlers((_handlers(RankingServicer(service)),))
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound
