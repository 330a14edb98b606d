"""Public HTTP endpoints: ranking, feedback, health, readiness, metrics."""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, StrictFloat, StrictInt, StrictStr

from recdistill.features.request import RankRequest, parse_rank_request
from student_server import metrics
from student_server.errors import PayloadTooLargeError
from student_server.service import RankingService

router = APIRouter()


class RankResponse(BaseModel):
    request_id: str
    model_version: str
    scores: list[float] = Field(description="one per candidate, in request order")
    ranking: list[str] = Field(description="candidate item ids, best first")


class Feedback(BaseModel):
    request_id: StrictStr
    item_id: StrictStr | StrictInt
    label: StrictFloat | StrictInt = Field(description="0 or 1 (or a probability)")
    ts: StrictFloat | StrictInt | None = Field(default=None, description="when it happened, unix seconds")


def _service(request: Request) -> RankingService:
    return request.app.state.service


async def _body(request: Request) -> bytes:
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"body of {declared} bytes exceeds the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(f"body exceeds the limit of {limit} bytes")
    return bytes(body)


@router.post(
    "/v1/rank", response_model=RankResponse, summary="Score and rank candidates for a user",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": RankRequest.model_json_schema(ref_template="#/components/schemas/{model}")}}}},
)
async def rank(request: Request) -> Response:
    started = time.perf_counter()
    try:
        result = await _service(request).rank(parse_rank_request(await _body(request)))
    finally:
        metrics.LATENCY.labels(endpoint="rank", protocol="http").observe(time.perf_counter() - started)
    metrics.REQUESTS.labels(endpoint="rank", protocol="http", status="200").inc()
    return Response(orjson.dumps(result.to_json()), media_type="application/json")


@router.post("/v1/feedback", status_code=202, summary="Record a delayed label for a served request and item")
async def feedback(body: Feedback, request: Request) -> dict[str, bool]:
    started = time.perf_counter()
    try:
        await _service(request).feedback(body.request_id, str(body.item_id), float(body.label), body.ts)
    finally:
        metrics.LATENCY.labels(endpoint="feedback", protocol="http").observe(time.perf_counter() - started)
    metrics.REQUESTS.labels(endpoint="feedback", protocol="http", status="202").inc()
    return {"accepted": True}


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: 503 until a model version is active and warmed up")
async def readyz(request: Request) -> Response:
    active = _service(request).registry.active
    if active is None:
        return Response(orjson.dumps({"ready": False, "reason": "no active model"}), status_code=503,
                        media_type="application/json")
    return Response(orjson.dumps({"ready": True, "model_version": active.version}), media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics")
async def prometheus_metrics() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
