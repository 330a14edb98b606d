"""Operator API under /admin (bearer token): list, stage, activate, roll back, delete versions; start and
end an A/B test (a holdback: a share of users kept on a control version while the rest get the active one).
Registry work (loading, probing, warming a session) runs in a thread, never on the event loop."""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from recdistill.core.artifact import VERSION_MAX_LENGTH, VERSION_PATTERN
from recdistill.core.contracts.registry import Holdback, to_builtins
from student_server import metrics
from student_server.errors import AdminDisabledError, UnauthorizedError, documented
from student_server.registry import ModelRegistry
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
                                        r403="The operator API is disabled (no token configured)"))
# A version name as the registry accepts it; another is refused before the handler runs (422).
Version = Annotated[str, Path(pattern=VERSION_PATTERN.pattern, max_length=VERSION_MAX_LENGTH,
                              description="a version directory's name")]
_CHANGE = documented(r404="No such version", r409="Refused by the registry's state: the version is active or an "
                     "A/B test's control arm, or another operator changed the state meanwhile",
                     r422="An invalid version name, or a version that fails verification, loading or its probes")


def _registry(request: Request) -> ModelRegistry:
    return request.app.state.service.registry


def _describe(scorer: Scorer) -> dict[str, Any]:
    return {"version": scorer.version, "manifest": to_builtins(scorer.manifest)}


@router.get("/versions", summary="List the versions in the registry")
async def list_versions(request: Request) -> dict[str, Any]:
    registry = _registry(request)
    active = registry.active
    holdback = registry.holdback
    return {"active": active.version if active else None,
            "holdback": to_builtins(holdback) if holdback else None,
            "versions": await asyncio.to_thread(registry.list_versions),
            # What each replica serves (a fleet's shared store: every replica; state.json: this process).
            "replicas": await asyncio.to_thread(registry.store.replicas)}


@router.post("/versions/{version}/stage", responses=_CHANGE,
              summary="Load, verify (sha256, schema), probe and warm up a version")
async def stage(version: Version, request: Request) -> dict[str, Any]:
    scorer = await asyncio.to_thread(_registry(request).stage, version)
    return {"staged": True} | _describe(scorer)


@router.post("/versions/{version}/activate", responses=_CHANGE,
              summary="Atomically swap serving to a version (staging it first)")
async def activate(version: Version, request: Request) -> dict[str, Any]:
    scorer = await asyncio.to_thread(_registry(request).activate, version)
    metrics.SWAPS.inc()
    metrics.set_active_version(scorer.version)
    return {"active": True} | _describe(scorer)


@router.post("/rollback", responses=_CHANGE,
              summary="Activate the previously active version")
async def rollback(request: Request) -> dict[str, Any]:
    scorer = await asyncio.to_thread(_registry(request).rollback)
    metrics.ROLLBACKS.inc()
    metrics.set_active_version(scorer.version)
    return {"active": True} | _describe(scorer)


@router.delete("/versions/{version}", responses=_CHANGE,
              summary="Delete a version that is not active")
async def delete(version: Version, request: Request) -> dict[str, Any]:
    await asyncio.to_thread(_registry(request).delete, version)
    return {"deleted": version}


class HoldbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=VERSION_PATTERN.pattern, max_length=VERSION_MAX_LENGTH,
                         description="the control arm: the version these users keep")
    share: float = Field(gt=0, lt=1, description="the share of users held back (by a hash of the user id)")
    salt: str = Field(default="holdback", min_length=1, description="a new salt draws new users")


@router.put("/holdback", responses=_CHANGE,
              summary="Start an A/B test: keep a share of users on a version (staged first)")
async def start_holdback(body: HoldbackRequest, request: Request) -> dict[str, Any]:
    holdback = Holdback(version=body.version, share=body.share, salt=body.salt)
    await asyncio.to_thread(_registry(request).set_holdback, holdback)
    return {"holdback": to_builtins(holdback)}


@router.delete("/holdback", responses=_CHANGE,
              summary="End the A/B test: every user gets the active version")
async def end_holdback(request: Request) -> dict[str, Any]:
    await asyncio.to_thread(_registry(request).set_holdback, None)
    return {"holdback": None}
