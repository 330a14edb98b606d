"""Public HTTP endpoints on FastAPI: feedback, health, readiness, metrics (ranking: `rank_http`)."""

from __future__ import annotations

import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from recdistill.core.features.request import ITEM_ID_MAX_LENGTH, REQUEST_ID_MAX_LENGTH, TS_MAX
from student_server import metrics
from student_server.errors import documented
from student_server.service import RankingService

router = APIRouter()


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: StrictStr = Field(min_length=1, max_length=REQUEST_ID_MAX_LENGTH)
    item_id: Annotated[StrictStr, Field(min_length=1, max_length=ITEM_ID_MAX_LENGTH)] | StrictInt = Field(
        union_mode="left_to_right")
    # Bounds on each member of a union, so that the OpenAPI document carries them too.
    label: Annotated[StrictFloat, Field(ge=0, le=1, allow_inf_nan=False)] | Annotated[StrictInt, Field(ge=0, le=1)] \
        = Field(description="0 or 1 (or a probability)")
    ts: Annotated[StrictFloat, Field(ge=0, le=TS_MAX, allow_inf_nan=False)] | Annotated[StrictInt, Field(
        ge=0, le=TS_MAX)] | None = Field(default=None, description="when it happened, unix seconds (whatever the "
                                                                   "schema's timestamp_unit; default: when received)")


def _service(request: Request) -> RankingService:
    return request.app.state.service


@router.post("/v1/feedback", status_code=202, summary="Record a delayed label for a served request and item",
             responses=documented(r408="The body did not arrive within the configured time",
                                  r413="Body larger than the configured limit",
                                  r422="A field out of its bounds, malformed JSON, an unknown field (`field` names it)",
                                  r503="The sample log cannot be written now or its queue is full (Retry-After)"))
async def feedback(body: Feedback, request: Request) -> dict[str, bool]:
    started = time.perf_counter()
    try:
        await _service(request).feedback(body.request_id, str(body.item_id), float(body.label), body.ts)
    finally:
        metrics.LATENCY.labels(endpoint="feedback", protocol="http", scenario="").observe(
            time.perf_counter() - started)
    metrics.count_request("feedback", "http", "202")
    return {"accepted": True}


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: 503 until the default scenario has a model version active and warmed up",
            responses={503: {"description": "The default (first) scenario has no active model version yet"}})
async def readyz(request: Request) -> Response:
    """Ready once the default scenario serves; every scenario's version is listed (null: not serving yet, its
    requests get a 503 naming it), so that adding a scenario to the schema never takes a fleet out of service."""
    service = _service(request)
    serving = {s.name: s.registry.active.version if s.registry.active else None for s in service.scenarios}
    default = service.scenarios.default.name
    if serving[default] is None:
        return Response(orjson.dumps({"ready": False, "reason": f"no active model in scenario {default}",
                                      "scenarios": serving}), status_code=503, media_type="application/json")
    return Response(orjson.dumps({"ready": True, "model_version": serving[default], "scenarios": serving}),
                    media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"description": "Prometheus text exposition format",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def prometheus_metrics() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
