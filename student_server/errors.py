"""Exceptions of the serving path and the one place that maps them to HTTP statuses and gRPC codes."""

from __future__ import annotations

import grpc

from recdistill.artifact import ArtifactError
from recdistill.errors import RecDistillError, ValidationError
from student_server.registry import ConflictError


class NotReadyError(RecDistillError):
    """No model version is active yet."""


class PayloadTooLargeError(RecDistillError):
    """The request body exceeds the configured limit."""


class AdminDisabledError(RecDistillError):
    """The operator API is off because no token is configured."""


class UnauthorizedError(RecDistillError):
    """Missing or wrong bearer token."""


def http_status(exc: Exception) -> int:
    if isinstance(exc, ValidationError):
        return 422
    if isinstance(exc, PayloadTooLargeError):
        return 413
    if isinstance(exc, UnauthorizedError):
        return 401
    if isinstance(exc, AdminDisabledError):
        return 403
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, ArtifactError):
        return 404 if "not found" in str(exc) else 422
    if isinstance(exc, NotReadyError):
        return 503
    return 500


def grpc_status(exc: Exception) -> grpc.StatusCode:
    return {
        422: grpc.StatusCode.INVALID_ARGUMENT, 413: grpc.StatusCode.INVALID_ARGUMENT,
        401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED,
        409: grpc.StatusCode.FAILED_PRECONDITION, 404: grpc.StatusCode.NOT_FOUND,
        503: grpc.StatusCode.UNAVAILABLE,
    }.get(http_status(exc), grpc.StatusCode.INTERNAL)


def error_body(exc: Exception) -> dict[str, object]:
    """What the client sees; unknown errors never leak internals."""
    if http_status(exc) == 500:
        return {"error": "internal error"}
    body: dict[str, object] = {"error": str(exc)}
    if isinstance(exc, ValidationError):
        body = {"error": exc.message, "field": exc.field}
    return body
