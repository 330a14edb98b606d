"""Operator API under /admin (bearer token): list, stage, activate, roll back, delete versions; start and
end an A/B test (a holdback: a share of users kept on a control version while the rest get the active one).
Each acts on one scenario's registry: `?scenario=NAME`, the schema's first scenario without it. Registry work
(loading, probing, warming a session) runs in a thread, never on the event loop."""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from recdistill.core.artifact import VERSION_MAX_LENGTH, VERSION_PATTERN
from recdistill.core.contracts.admin import (
    HoldbackState,
    VersionChange,
    VersionDeleted,
    VersionList,
)
from recdistill.core.contracts.registry import Holdback
from recdistill.core.features.spec import SCENARIO_NAME
from student_server import metrics
from student_server.errors import AdminDisabledError, UnauthorizedError, documented
from student_server.scenarios import Scenario
from student_server.scoring import Scorer


def require_token(request: Request) -> None:
    token = request.app.state.settings.admin_token
    if not token:
        raise AdminDisabledError("the operator API is disabled: set RECDISTILL_ADMIN_TOKEN to enable it")
    supplied = request.headers.get("authorization", "")
    if not hmac.compare_digest(supplied.encode(), f"Bearer {token}".encode()):
        raise UnauthorizedError("missing or wrong bearer token")


router = APIRouter(prefix="/admin", tags=["operator"], dependencies=[Depends(require_token)],
                   responses=documented(r401="Missing or wrong bearer token",
                                        r403="The operator API is disabled (no token configured)",
                                        r404="The schema declares no such scenario (`?scenario=`)"))
# A version name as the registry accepts it; another is refused before the handler runs (422).
Version = Annotated[str, Path(pattern=VERSION_PATTERN.pattern, max_length=VERSION_MAX_LENGTH,
                              description="a version directory's name")]
_CHANGE = documented(r404="No such version, or no such scenario",
                     r409="Refused by the registry's state: the version is active or an A/B test's control arm, or "
                     "another operator changed the state meanwhile",
                     r422="An invalid version name, or a version that fails verification, loading or its probes")


def _scenario(request: Request, scenario: Annotated[str | None, Query(
        pattern=SCENARIO_NAME, description="the scenario whose registry to act on (default: the schema's first)")
        ] = None) -> Scenario:
    return request.app.state.service.scenarios.get(scenario)


On = Annotated[Scenario, Depends(_scenario)]


def _json(value: msgspec.Struct) -> Response:
    return Response(msgspec.json.encode(value), media_type="application/json")


def _ok(model: type[msgspec.Struct], description: str, errors: dict[int | str, dict[str, Any]] | None = None
        ) -> dict[int | str, dict[str, Any]]:
    """The route's 200 documented as its response struct (a component `operator_schemas` provides)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {200: {"description": description, "content": {"application/json": {"schema": schema}}}} | (errors or {})


def _change(scorer: Scorer, active: bool) -> Response:
    return _json(VersionChange(version=scorer.version, manifest=scorer.manifest, active=active))


@router.get("/versions", summary="List the versions in the registry", response_class=Response,
            responses=_ok(VersionList, "The versions, the active one, the A/B test and what each replica serves"))
async def list_versions(on: On) -> Response:
    registry = on.registry
    active = registry.active
    return _json(VersionList(active=active.version if active else None, holdback=registry.holdback,
                             versions=await asyncio.to_thread(registry.list_versions),
                             replicas=await asyncio.to_thread(registry.store.replicas), scenario=on.name))


@router.post("/versions/{version}/stage", response_class=Response, responses=_ok(VersionChange, "Staged", _CHANGE),
             summary="Load, verify (sha256, schema), probe and warm up a version")
async def stage(version: Version, on: On) -> Response:
    return _change(await asyncio.to_thread(on.registry.stage, version), active=False)


@router.post("/versions/{version}/activate", response_class=Response,
             responses=_ok(VersionChange, "Serving it now", _CHANGE),
             summary="Atomically swap serving to a version (staging it first)")
async def activate(version: Version, on: On) -> Response:
    scorer = await asyncio.to_thread(on.registry.activate, version)
    metrics.SWAPS.inc()
    metrics.set_active_version(on.name, scorer.version)
    return _change(scorer, active=True)


@router.post("/rollback", response_class=Response, responses=_ok(VersionChange, "Serving it now", _CHANGE),
             summary="Activate the previously active version")
async def rollback(on: On) -> Response:
    scorer = await asyncio.to_thread(on.registry.rollback)
    metrics.ROLLBACKS.inc()
    metrics.set_active_version(on.name, scorer.version)
    return _change(scorer, active=True)


@router.delete("/versions/{version}", response_class=Response, responses=_ok(VersionDeleted, "Deleted", _CHANGE),
               summary="Delete a version that is not active")
async def delete(version: Version, on: On) -> Response:
    await asyncio.to_thread(on.registry.delete, version)
    return _json(VersionDeleted(deleted=version))


class HoldbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=VERSION_PATTERN.pattern, max_length=VERSION_MAX_LENGTH,
                         description="the control arm: the version these users keep")
    share: float = Field(gt=0, lt=1, description="the share of users held back (by a hash of the user id)")
    salt: str = Field(default="holdback", min_length=1, description="a new salt draws new users")


@router.put("/holdback", response_class=Response, responses=_ok(HoldbackState, "The A/B test runs", _CHANGE),
            summary="Start an A/B test: keep a share of users on a version (staged first)")
async def start_holdback(body: HoldbackRequest, on: On) -> Response:
    holdback = Holdback(version=body.version, share=body.share, salt=body.salt)
    await asyncio.to_thread(on.registry.set_holdback, holdback)
    return _json(HoldbackState(holdback=holdback))


@router.delete("/holdback", response_class=Response, responses=_ok(HoldbackState, "No A/B test runs", _CHANGE),
               summary="End the A/B test: every user gets the active version")
async def end_holdback(on: On) -> Response:
    await asyncio.to_thread(on.registry.set_holdback, None)
    return _json(HoldbackState(holdback=None))
