"""ONNX Runtime execution providers for serving: the CPU unless told otherwise, the CPU as the fallback of
any provider this build lacks (CUDA without the `gpu` extra, as here and in CI), a name that is no provider
refused at start."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from recdistill.core.contracts.onnx import CPU, providers_for, serving_session
from student_server.settings import StudentSettings

pytestmark = pytest.mark.unit


def test_a_provider_this_build_lacks_falls_back_to_the_cpu_and_says_so(caplog: pytest.LogCaptureFixture,
                                                                       registry: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has CUDA")
    with caplog.at_level(logging.WARNING):
        assert providers_for(["CUDAExecutionProvider", CPU]) == [CPU]
    assert "CUDAExecutionProvider" in caplog.text
    assert "gpu" in caplog.text
    session = serving_session(registry / "v1" / "model.onnx", 1, ["CUDAExecutionProvider"])
    assert session.get_providers() == [CPU]


def test_a_name_that_is_no_provider_is_refused_at_start() -> None:
    assert StudentSettings().ort_providers == [CPU]
    with pytest.raises(ValidationError, match="unknown ONNX Runtime execution provider"):
        StudentSettings(ort_providers=["CUDAExecutonProvider"])
