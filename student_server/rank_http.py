"""`POST /v1/rank` as a bare ASGI app, and the app in front of FastAPI that sends it there.

Ranking is the one hot path: a request is a few tens of microseconds of real work (decode, encode,
one share of an ONNX Runtime batch), and FastAPI's per-request machinery (request object,
dependency solving, middleware, route matching) cost about as much again. `RankFastPath` hands
`POST /v1/rank` straight to `RankEndpoint`, which reads the body, calls the ranking core and writes
the response itself; everything else (other routes, other methods, lifespan) goes to FastAPI, which
also mounts the endpoint as an ordinary route. Its OpenAPI entry is added by `openapi_path_item`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recdistill.core.errors import RecDistillError
from recdistill.core.features.request import RequestTypes
from student_server.errors import ErrorResponse, PayloadTooLargeError, RequestTimeoutError, error_body, http_status
from student_server.scenarios import count_rank
from student_server.service import RankingService

logger = logging.getLogger(__name__)
SCENARIO_PREFIX = "/v1/scenarios/"
_CONTENT_TYPE = (b"content-type", b"application/json")


class RankResponse(BaseModel):
    request_id: str = Field(description="the server's id of this request (unique): send feedback with it")
    model_version: str
    scores: list[float] = Field(description="one per candidate, in request order")
    ranking: list[str] = Field(description="candidate item ids, best first")
    policy: str = Field(description='"model" (ranked by the scores) or "random" (the exploration slice)')
    scenario: str = Field(description="the scenario that served it")
    client_request_id: str | None = Field(default=None, description="the request's own `request_id`, if it had one")


async def read_body(scope: Scope, receive: Receive, limit: int, timeout_s: float) -> bytes:
    """The whole body, at most `limit` bytes, arriving within `timeout_s` (a client that trickles its body
    holds a connection and a descriptor: it gets a 408 instead)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise PayloadTooLargeError(f"body of {value.decode()} bytes exceeds the limit of {limit}")
    try:
        async with asyncio.timeout(timeout_s):
            message = await receive()
            body = message.get("body", b"")
            if not message.get("more_body", False):
                return body
            buffer = bytearray(body)
            while message.get("more_body", False):
                message = await receive()
                buffer += message.get("body", b"")
                if len(buffer) > limit:
                    raise PayloadTooLargeError(f"body exceeds the limit of {limit} bytes")
            return bytes(buffer)
    except TimeoutError:
        raise RequestTimeoutError(f"the request body did not arrive within {timeout_s:g} s") from None


class RankEndpoint:
    """Reached through `RankFastPath` (and as a Starlette `Route`); finds the service on the FastAPI
    app's state, which the lifespan sets."""

    def __init__(self, max_body_bytes: int, body_timeout_s: float) -> None:
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        service: RankingService = scope["app"].state.service
        status, scenario = 200, None
        try:
            scenario = service.scenarios.get(scenario_in(scope["path"]))
            source = service.traffic_source(_header(scope, service.source_header)) if service.reads_source else None
            body = await read_body(scope, receive, self.max_body_bytes, self.body_timeout_s)
            result = await service.rank(service.request_types.parse(body), scenario, source, body)
            payload = orjson.dumps(result.to_json())
        except RecDistillError as exc:
            status = http_status(exc)
            payload = error_body(exc).to_json()
        except Exception as exc:  # noqa: BLE001 - a 500 without internals; the log has the traceback
            logger.exception("ranking request failed")
            status = 500
            payload = error_body(exc).to_json()
        count_rank(scenario, "http", str(status), time.perf_counter() - started)
        headers = [_CONTENT_TYPE, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def scenario_in(path: str) -> str | None:
    """The scenario a ranking path names: `/v1/scenarios/{name}/rank` -> name; `/v1/rank` -> None."""
    return path[len(SCENARIO_PREFIX):-len("/rank")] if path.startswith(SCENARIO_PREFIX) else None


def is_rank_path(path: str) -> bool:
    return path == "/v1/rank" or (path.startswith(SCENARIO_PREFIX) and path.endswith("/rank")
                                  and "/" not in path[len(SCENARIO_PREFIX):-len("/rank")])


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


class RankFastPath:
    """The ASGI app the server runs: `POST /v1/rank` to `endpoint`, everything else to `api`, with the
    same body limit (`max_body_bytes`) on every request."""

    def __init__(self, api: ASGIApp, endpoint: RankEndpoint) -> None:
        self.api = api
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and is_rank_path(scope["path"]):
            scope["app"] = self.api  # where the endpoint finds the service, as under Starlette
            await self.endpoint(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            # The same body limit for every route: the body is read here, at most `max_body_bytes` of it.
            try:
                body = await read_body(scope, receive, self.endpoint.max_body_bytes, self.endpoint.body_timeout_s)
            except (PayloadTooLargeError, RequestTimeoutError) as exc:
                payload = error_body(exc).to_json()
                await send({"type": "http.response.start", "status": http_status(exc),
                            "headers": [_CONTENT_TYPE, (b"content-length", str(len(payload)).encode())]})
                await send({"type": "http.response.body", "body": payload})
                return
            receive = _replay(body, receive)
        await self.api(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` that hands the body already read, then whatever the connection says next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def openapi_path_item(types: RequestTypes, ref_template: str = "#/components/schemas/{name}"
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the OpenAPI path item of POST /v1/rank for the serving schema's request, the component schemas it
    refers to)."""
    request_schema, components = types.json_schema(ref_template)
    for model in (RankResponse, ErrorResponse):
        components[model.__name__] = model.model_json_schema(ref_template=ref_template.replace("{name}", "{model}"))

    def response(description: str, model: type[BaseModel]) -> dict[str, Any]:
        return {"description": description,
                "content": {"application/json": {"schema": {"$ref": ref_template.format(name=model.__name__)}}}}

    operation = {
        "summary": "Score and rank candidates for a user",
        "operationId": "rank_v1_rank_post",
        "requestBody": {"required": True, "content": {"application/json": {"schema": request_schema}}},
        "responses": {
            "200": response("Scores in request order, the ranking, the version that served it", RankResponse),
            "408": response("The body did not arrive within the configured time", ErrorResponse),
            "400": response("A header the server reads (the traffic source) is too long or not UTF-8 "
                            "(`field` names it)", ErrorResponse),
            "413": response("Body larger than the configured limit", ErrorResponse),
            "431": response("The request line and headers exceed 32 KiB (`field` names the header)", ErrorResponse),
            "422": response("Malformed JSON, a field the schema does not declare, a wrong type, NaN or infinity, "
                            "too many candidates or events (`field` names it)",
                            ErrorResponse),
            "503": response("No model version is active", ErrorResponse),
        },
    }
    return {"post": operation}, components


def scenario_path_item(path_item: dict[str, Any], scenarios: list[str]) -> dict[str, Any]:
    """POST /v1/scenarios/{scenario}/rank: the same operation, with the scenario in the path (one of the
    declared ones) and a 404 for any other."""
    operation = dict(path_item["post"])
    operation["operationId"] = "rank_scenario_v1_post"
    operation["summary"] = "Score and rank candidates for a user, in one scenario"
    operation["parameters"] = [{"name": "scenario", "in": "path", "required": True,
                                "schema": {"type": "string", "enum": scenarios}}]
    operation["responses"] = operation["responses"] | {
        "404": {"description": "The schema declares no such scenario",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}}
    return {"post": operation}
