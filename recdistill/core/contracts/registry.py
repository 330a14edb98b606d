"""The model registry's files: each version's `manifest.json` and the registry's `state.json`.

Both carry `format`; a reader that meets another format stops with an error naming it. Unknown extra
fields are ignored, so adding an optional field is a compatible change.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from recdistill.core.contracts.worker import DataWindow, GateMetrics
from recdistill.core.errors import ConflictError

MANIFEST_FORMAT = 1
STATE_FORMAT = 1
STATE_HISTORY = 20  # previously active versions kept for roll-backs


class Manifest(Struct, frozen=True, kw_only=True):
    """What a version is: its ONNX file's digest, the schema it encodes with, where it came from."""

    version: str
    schema_hash: str
    sha256: str  # of model.onnx
    created_unix: float
    teacher_version: str | None = None
    scenario: str | None = None  # the scenario it was trained for (None: before scenarios, the first one)
    data_window: DataWindow = msgspec.field(default_factory=DataWindow)  # what it was trained on
    metrics: GateMetrics = msgspec.field(default_factory=GateMetrics)  # what the gate measured on it
    # The model's and the training's configs: free-form by nature (each family and phase has its own keys),
    # reports for people, never read by the serving path.
    config: dict[str, Any] = {}
    distill: dict[str, Any] = {}
    format: int = MANIFEST_FORMAT


class Holdback(Struct, frozen=True, kw_only=True):
    """A simultaneous A/B test: the users whose hash falls under `share` stay on `version` (the control),
    every other user gets the active version, whatever it becomes. Assignment is by user, stable across
    requests, restarts and replicas (a hash of the salted user id), so each user sees one arm."""

    version: str
    share: Annotated[float, Meta(gt=0, lt=1)]
    salt: str = "holdback"

    def holds(self, user_id: str) -> bool:
        return _unit_hash(f"{self.salt}:{user_id}") < self.share


def _unit_hash(key: str) -> float:
    """A uniform number in [0, 1) from a string, the same in every process (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2.0**64


class RegistryState(Struct, frozen=True, kw_only=True):
    """The active-version pointer and the versions it replaced (oldest first), for roll-backs; and the
    holdback of a running A/B test, if any. `revision` counts the changes: every store writes a change as a
    compare-and-set on it, so two operators acting at once never lose one another's update.

    The operator rules live here, so every path that changes the state (the API, the CLI, a replica, a
    roll-back) checks them against the state it changes: an A/B test's control arm never becomes the
    active version, and neither the active version nor the control arm can be removed."""

    active: str | None = None
    history: list[str] = []
    holdback: Holdback | None = None
    revision: int = 0
    format: int = STATE_FORMAT

    def activated(self, version: str) -> RegistryState:
        if self.holdback is not None and self.holdback.version == version:
            raise ConflictError(f"version {version} is the holdback of an A/B test: end the test before "
                                "activating it")
        if self.active == version:
            return self
        history = [v for v in self.history if v != version]
        if self.active:
            history.append(self.active)
        return msgspec.structs.replace(self, active=version, history=history[-STATE_HISTORY:])

    def rolled_back(self) -> RegistryState:
        if not self.history:
            raise ConflictError("no previous version to roll back to")
        previous = self.history[-1]
        if self.holdback is not None and self.holdback.version == previous:
            raise ConflictError(f"the previous version {previous} is the holdback of an A/B test: end the "
                                "test before rolling back onto it")
        return msgspec.structs.replace(self, active=previous, history=self.history[:-1])

    def without(self, version: str) -> RegistryState:
        if self.active == version:
            raise ConflictError(f"version {version} is active; activate another one first")
        if self.holdback is not None and self.holdback.version == version:
            raise ConflictError(f"version {version} is the holdback of an A/B test; end the test first")
        return msgspec.structs.replace(self, history=[v for v in self.history if v != version])

    def with_holdback(self, holdback: Holdback | None) -> RegistryState:
        if holdback is not None and holdback.version == self.active:
            raise ConflictError(f"version {holdback.version} is active: a holdback must keep users on "
                                "another version")
        return msgspec.structs.replace(self, holdback=holdback)

    def next_revision(self) -> RegistryState:
        return msgspec.structs.replace(self, revision=self.revision + 1)


ANCHOR_FORMAT = 1


class GateAnchor(Struct, frozen=True, kw_only=True):
    """The version every later candidate must stay non-inferior to (`gate-anchor.json` in the registry),
    beside the active one, so that small losses cannot add up over promotions. Set by the batch phase's
    version, then moved only to a candidate significantly better than it."""

    version: str
    holdout_auc: float
    reason: str  # "batch version", "first version", "significantly better than <version>"
    anchored_unix: float
    format: int = ANCHOR_FORMAT


REPLICA_FORMAT = 1


class ReplicaStatus(Struct, frozen=True, kw_only=True):
    """What one serving process reports to a shared registry store: the version it serves, and when."""

    replica: str  # <server id>:<pid>
    active: str | None
    http: str  # host:port of its HTTP server
    grpc: str
    updated_unix: float
    holdback: str | None = None  # the control arm's version while an A/B test runs
    format: int = REPLICA_FORMAT


def to_json(value: Struct) -> bytes:
    return msgspec.json.format(msgspec.json.encode(value), indent=2)


def to_builtins(value: Struct) -> dict[str, Any]:
    return msgspec.to_builtins(value)
