"""The report of `make deploy-check` (deploy/check/check.py): the deploy kit's images built and its compose stack
run for real, with traffic, a hot swap and two kills. `runs/deploy-check/report.json`."""

from __future__ import annotations

from pathlib import Path

import msgspec
from msgspec import Struct

from recdistill.core.contracts.versioned import decode_versioned

DEPLOY_CHECK_FORMAT = 1


class ImageBuild(Struct, frozen=True, kw_only=True):
    """One image of the kit (or a local stand-in for a public one), as built."""

    name: str  # repository:tag
    dockerfile: str  # the file it was built from (the base image: how it was made)
    build_seconds: float  # 0.0 when it was already there and reused (`reused`)
    size_mb: float
    reused: bool = False
    health_check: str | None = None  # what `podman healthcheck run` said of a running container of it


class Traffic(Struct, kw_only=True):
    """Ranking requests sent through the load balancer, by protocol, and what came back."""

    http: int = 0
    grpc: int = 0
    http_errors: int = 0
    grpc_errors: int = 0
    feedback: int = 0
    feedback_errors: int = 0
    errors: list[str] = []  # the first few, verbatim
    versions_seen: dict[str, int] = {}  # model version -> requests it answered

    @property
    def requests(self) -> int:
        return self.http + self.grpc

    @property
    def failed(self) -> int:
        return self.http_errors + self.grpc_errors


class Kill(Struct, frozen=True, kw_only=True):
    """One `podman kill` and what followed. A killed container is a stopped one to the engine (its restart
    policy leaves it down, as Docker's does), so the check starts it again itself, as an operator would."""

    service: str
    container: str
    requests_after: int  # ranking requests sent from the kill until the killed container served again
    errors_after: int  # of them, how many failed
    recovered_seconds: float | None  # until what the service did was done again by the others (`recovered`)
    recovered: str  # what "done again" means for this service
    restarted_seconds: float | None  # from `podman start` of the killed container to it serving again


class DeployCheckReport(Struct, kw_only=True):
    passed: bool
    failures: list[str]  # what did not hold (empty when passed)
    engine: str  # e.g. "podman 4.3.1 (runc), podman-compose 1.6.0"
    images: list[ImageBuild]
    traffic: Traffic
    first_version: str
    promoted_versions: list[str]  # versions the stream workers promoted while the check ran
    swap_seconds: float | None  # from the workers' start to both replicas serving a promoted version
    replicas_serving: dict[str, str]  # replica -> the version it served at the end (GET /admin/versions)
    kills: list[Kill]
    examples_trained: int  # by the stream workers, from their shared checkpoint
    stage_seconds: dict[str, float]
    total_seconds: float
    format: int = DEPLOY_CHECK_FORMAT

    @classmethod
    def read(cls, path: Path) -> DeployCheckReport:
        return decode_versioned(path.read_bytes(), cls, DEPLOY_CHECK_FORMAT, f"{path}: deploy-check report",
                                "run `make deploy-check` again with this version")

    def to_json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2)
