"""The student server's operator API responses (`/admin`): typed structs, encoded by msgspec and documented
in the server's OpenAPI document from these same definitions (`operator_schemas`). Each carries `format`,
like every other contract; a field added with a default is a compatible change."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from recdistill.core.contracts.registry import Holdback, Manifest, ReplicaStatus

ADMIN_FORMAT = 1


class VersionEntry(Struct, frozen=True, kw_only=True):
    version: str
    active: bool
    holdback: bool  # the control arm of the running A/B test
    staged: bool  # loaded, verified and warmed in this process
    manifest: Manifest


class ReplicaEntry(ReplicaStatus, frozen=True, kw_only=True):
    """A replica's last report, and whether it is older than the store's staleness bound."""

    stale: bool = False


class VersionList(Struct, frozen=True, kw_only=True):
    active: str | None
    holdback: Holdback | None
    versions: list[VersionEntry]
    # What each replica serves (a fleet's shared store: every replica; state.json: this process).
    replicas: list[ReplicaEntry]
    scenario: str | None = None  # whose registry this is
    format: int = ADMIN_FORMAT


class VersionChange(Struct, frozen=True, kw_only=True):
    """A version staged, or made active (activate, roll back), with its manifest."""

    version: str
    manifest: Manifest
    staged: bool = True
    active: bool = False
    format: int = ADMIN_FORMAT


class VersionDeleted(Struct, frozen=True, kw_only=True):
    deleted: str
    format: int = ADMIN_FORMAT


class HoldbackState(Struct, frozen=True, kw_only=True):
    holdback: Holdback | None  # None: no A/B test runs
    format: int = ADMIN_FORMAT


OPERATOR_RESPONSES = (VersionList, VersionChange, VersionDeleted, HoldbackState)


def operator_schemas(ref_template: str = "#/components/schemas/{name}") -> dict[str, Any]:
    """The JSON schemas of every operator response and what they refer to, as OpenAPI components."""
    _, components = msgspec.json.schema_components(OPERATOR_RESPONSES, ref_template=ref_template)
    return components


class ErrorBody(Struct, frozen=True, omit_defaults=True):
    """Every error answer's body, over HTTP (JSON) and gRPC (its text is the status detail): what went wrong, and
    the request field at fault when one is (`candidates.0.item_id`, `history_ts.3`)."""

    error: str
    field: str | None = None

    @property
    def detail(self) -> str:
        """The gRPC status detail."""
        return f"{self.field}: {self.error}" if self.field is not None else self.error

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)
