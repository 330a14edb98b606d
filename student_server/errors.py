"""Exceptions of the serving path and the one place that maps them, by type only, to HTTP statuses
and gRPC codes."""

from __future__ import annotations

from typing import Any

import grpc
from pydantic import BaseModel, Field

from recdistill.core.artifact import ArtifactError
from recdistill.core.contracts.admin import ErrorBody
from recdistill.core.errors import (
    BrokerUnavailableError,
    ConflictError,
    NotFoundError,
    OverloadedError,
    RecDistillError,
    ValidationError,
)


class BadHeaderError(ValidationError):
    """A request header (HTTP) or metadata entry (gRPC) the server reads is too long or not UTF-8 text."""


class NotReadyError(RecDistillError):
    """No model version is active yet."""


class PayloadTooLargeError(RecDistillError):
    """The request body exceeds the configured limit."""


class RequestTimeoutError(RecDistillError):
    """The request body did not arrive in time."""


class AdminDisabledError(RecDistillError):
    """The operator API is off because no token is configured."""


class UnauthorizedError(RecDistillError):
    """Missing or wrong bearer token."""


# Most specific first: the first type an exception is an instance of decides.
_STATUSES: tuple[tuple[type[Exception], int, grpc.StatusCode], ...] = (
    (BadHeaderError, 400, grpc.StatusCode.INVALID_ARGUMENT),
    (ValidationError, 422, grpc.StatusCode.INVALID_ARGUMENT),
    (PayloadTooLargeError, 413, grpc.StatusCode.INVALID_ARGUMENT),
    (RequestTimeoutError, 408, grpc.StatusCode.DEADLINE_EXCEEDED),
    (UnauthorizedError, 401, grpc.StatusCode.UNAUTHENTICATED),
    (AdminDisabledError, 403, grpc.StatusCode.PERMISSION_DENIED),
    (NotFoundError, 404, grpc.StatusCode.NOT_FOUND),
    (ConflictError, 409, grpc.StatusCode.FAILED_PRECONDITION),
    (ArtifactError, 422, grpc.StatusCode.FAILED_PRECONDITION),
    (OverloadedError, 503, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotReadyError, 503, grpc.StatusCode.UNAVAILABLE),
    (BrokerUnavailableError, 503, grpc.StatusCode.UNAVAILABLE),
)


def _lookup(exc: Exception) -> tuple[int, grpc.StatusCode]:
    for kind, status, code in _STATUSES:
        if isinstance(exc, kind):
            return status, code
    return 500, grpc.StatusCode.INTERNAL


def http_status(exc: Exception) -> int:
    return _lookup(exc)[0]


def grpc_status(exc: Exception) -> grpc.StatusCode:
    return _lookup(exc)[1]


def error_headers(exc: Exception) -> dict[str, str]:
    """Extra response headers: `Retry-After` when the server asks the client to come back later."""
    if isinstance(exc, OverloadedError):
        return {"Retry-After": str(max(1, round(exc.retry_after_s)))}
    return {}


ERROR_CHARS = 1_000  # the most of an error's text a client is sent (a gRPC trailer must stay small)


def _bounded(text: str) -> str:
    return text if len(text) <= ERROR_CHARS else f"{text[:ERROR_CHARS]}... ({len(text)} characters)"


def error_body(exc: Exception) -> ErrorBody:
    """What the client sees, at most `ERROR_CHARS` of it a field; unknown errors never leak internals."""
    if http_status(exc) == 500:
        return ErrorBody(error="internal error")
    if isinstance(exc, ValidationError):
        return ErrorBody(error=_bounded(exc.message), field=_bounded(exc.field))
    return ErrorBody(error=_bounded(str(exc)))


class ErrorResponse(BaseModel):
    """Every error answer's body."""

    error: str
    field: str | None = Field(default=None, description="the request field at fault, e.g. candidates.0.item_id")


def documented(**answers: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error answers, e.g. `documented(r404="no such version")`: each with the
    `ErrorResponse` body the handlers write."""
    return {int(code.removeprefix("r")): {"model": ErrorResponse, "description": text}
            for code, text in answers.items()}
