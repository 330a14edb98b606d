"""`create_app(settings)`: the server's ASGI app (FastAPI behind the ranking fast path), with the gRPC
server, registry follower and sample-log writer started and stopped by its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from recdistill.core.contracts.admin import ErrorBody, operator_schemas
from recdistill.core.contracts.registry import ReplicaStatus
from recdistill.core.errors import RecDistillError, ValidationError
from recdistill.core.features.schema import FeatureSchema
from recdistill.core.registry_store import StateStore
from recdistill.core.samplelog import LogLocation, open_writer
from student_server import admin, metrics, routes
from student_server.errors import error_body, error_headers, http_status
from student_server.grpc_service import start_grpc_server
from student_server.rank_http import SCENARIO_PREFIX, RankEndpoint, RankFastPath, openapi_path_item, scenario_path_item
from student_server.sampling import TrafficSampler
from student_server.scenarios import Scenario, build_scenarios
from student_server.service import RankingService
from student_server.settings import StudentSettings

logger = logging.getLogger(__name__)


# Pydantic adds the union member tried ("str", "int", ...) to error locations; they are not fields.
_UNION_TAGS = {"str", "int", "float", "bool", "none"}


def _pydantic_field(location: tuple[object, ...]) -> str:
    parts = [str(p) for p in location
             if p != "body" and not (isinstance(p, str) and (p in _UNION_TAGS or "[" in p or "-" in p))]
    return ".".join(parts) or "body"


def _json_error(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> Response:
    return Response(body.to_json(), status_code=status, media_type="application/json", headers=headers)


async def _follow_registry(scenario: Scenario, period_s: float, replica: ReplicaStatus) -> None:
    """Follow a scenario's state store: at once when a notification wakes it (a fleet's pub/sub), else every
    `period_s` (polling, also the fallback when notifications are lost); report what this replica serves."""
    registry = scenario.registry
    wake = asyncio.Event()
    listener = asyncio.create_task(_listen(registry.store, wake))
    failing = False
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), period_s)
            wake.clear()
            try:
                await asyncio.to_thread(scenario.sync)
                active, holdback = registry.active, registry.holdback
                replica = msgspec.structs.replace(replica, active=active.version if active else None,
                                                  holdback=holdback.version if holdback else None,
                                                  updated_unix=time.time())
                await asyncio.to_thread(registry.store.report, replica)
                if failing:
                    logger.info("scenario %s: the registry's state store answers again", scenario.name)
                failing = False
            except Exception as exc:  # noqa: BLE001 - keep serving the current version
                if not failing:  # once per outage, not every poll
                    logger.error("scenario %s: could not follow the registry's active version (%s); serving %s "
                                 "meanwhile", scenario.name, exc, registry.active.version if registry.active else None)
                failing = True
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


async def _listen(store: StateStore, wake: asyncio.Event) -> None:
    """Wake the follower on every activation the store publishes; reconnect after a broker outage."""
    if not store.shared:
        return  # state.json: polled
    while True:
        try:
            async for _ in store.notifications():  # type: ignore[union-attr]
                wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the broker went away: polling covers it, retry shortly
            logger.debug("registry notifications interrupted: %s", exc)
        wake.set()  # anything published meanwhile was missed: look now
        await asyncio.sleep(1.0)


def build_service(settings: StudentSettings) -> RankingService:
    schema = FeatureSchema.load(settings.registry / "features.json")
    # Each scenario's active version, and the holdback of an A/B test if one runs.
    scenarios = build_scenarios(settings, schema)
    # A file log: a partition per live process, named by the stable server id (a restart appends to its own
    # again). A redis log: one stream shared by every replica.
    log, where, lock = open_writer(LogLocation.parse(settings.sample_log), settings.server_id,
                                   settings.sample_log_min_segments)
    logger.info("sampled traffic goes to %s", where)
    sampler = TrafficSampler(log, settings.sampling_rate, settings.sample_queue,
                             long_history_rate=settings.sampling_rate_long_history,
                             long_history_events=settings.long_history_events, partition_lock=lock,
                             buffer=settings.sample_buffer, source_rates=settings.sampling_rate_by_source)
    return RankingService(settings, schema, scenarios, sampler)


def create_app(settings: StudentSettings | None = None) -> RankFastPath:
    """The server's ASGI app: FastAPI (`.api`) behind the ranking fast path."""
    settings = settings or StudentSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await asyncio.to_thread(build_service, settings)
        grpc_server, bound = await start_grpc_server(service, settings.host, settings.grpc_port)
        app.state.service, app.state.grpc_port = service, bound
        replica = ReplicaStatus(replica=f"{settings.server_id}:{os.getpid()}", active=None,
                                http=f"{settings.host}:{settings.port}", grpc=f"{settings.host}:{bound}",
                                updated_unix=time.time())
        followers = [asyncio.create_task(_follow_registry(scenario, settings.state_poll_s, replica))
                     for scenario in service.scenarios]
        # Everything loaded so far lives as long as the process: keep it out of the collector's full
        # passes, whose pauses (a few ms per 100k objects) otherwise land in the latency tail.
        gc.collect()
        gc.freeze()
        logger.info("student server ready: HTTP %s:%d, gRPC %s:%d, active versions %s", settings.host,
                    settings.port, settings.host, bound,
                    {s.name: s.registry.active.version if s.registry.active else None for s in service.scenarios})
        try:
            yield
        finally:
            for follower in followers:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
            await grpc_server.stop(grace=5)
            service.close()

    app = FastAPI(title="Rec-Distill student server", version="0.1.0", lifespan=lifespan,
                  description="Low-latency ranking on ONNX Runtime with hot-swappable model versions.")
    app.state.settings = settings
    rank_endpoint = RankEndpoint(settings.max_body_bytes, settings.body_timeout_s)
    # Also a route of its own (first in the table): other methods get a 405 from Starlette.
    app.router.routes[:0] = [Route("/v1/rank", rank_endpoint, methods=["POST"]),
                             Route(f"{SCENARIO_PREFIX}{{scenario}}/rank", rank_endpoint, methods=["POST"])]
    app.include_router(routes.router)
    app.include_router(admin.router)

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            service = app.state.service
            rank_item, components = openapi_path_item(service.request_types)
            scenario_item = scenario_path_item(rank_item, list(service.scenarios.by_name))
            spec["paths"] = {"/v1/rank": rank_item, f"{SCENARIO_PREFIX}{{scenario}}/rank": scenario_item} \
                | spec["paths"]
            spec.setdefault("components", {}).setdefault("schemas", {}).update(components | operator_schemas())
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    _install_error_handlers(app)
    return RankFastPath(app, rank_endpoint)

def _install_error_handlers(app: FastAPI) -> None:
    """Every error in the one body the routes use, its status by type (`student_server.errors`)."""

    @app.exception_handler(RecDistillError)
    async def _known_error(request: Request, exc: RecDistillError) -> Response:
        status = http_status(exc)
        endpoint = request.url.path.rsplit("/", 1)[-1] if request.url.path.startswith("/v1/") else "admin"
        metrics.count_request(endpoint, "http", str(status))
        return _json_error(status, error_body(exc), error_headers(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        """FastAPI's own answers (404, 405, 400 for a body it cannot parse) in the error body every route
        uses. A 405's Allow lists the methods of every route on the path (Starlette names the first's only)."""
        if exc.status_code == 400:  # a body FastAPI could not parse: malformed input, as everywhere else
            return _json_error(422, error_body(ValidationError("body", str(exc.detail))))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            methods = {m for r in app.router.routes if isinstance(r, Route) and r.methods
                       and r.matches(request.scope)[0] != Match.NONE for m in r.methods}
            headers["Allow"] = ", ".join(sorted(methods))
        return _json_error(exc.status_code, ErrorBody(error=str(exc.detail)), headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        field = _pydantic_field(tuple(first["loc"]))
        return _json_error(422, error_body(ValidationError(field, first["msg"])))

    @app.exception_handler(Exception)
    async def _unknown(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s", request.url.path)
        return _json_error(500, error_body(exc))
