"""The serving frontend: HTTP + gRPC ranking on ONNX Runtime, model registry with hot swap, sampling.

Its face: other packages import these names from here, never from the rooms (`recdistill.core.faces`)."""

from __future__ import annotations

from recdistill.core.faces import lazy_face

_ROOMS = {
    "StudentServer": "launcher",
    "student_process": "launcher",
    "serve": "main",
    "StudentSettings": "settings",
    "build_service": "app",
}
__all__, __getattr__ = lazy_face(__name__, _ROOMS)
