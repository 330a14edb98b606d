"""ONNX Runtime session options: one definition for the student server and the worker's gate, so the
gate measures latency and scores the way the server will serve."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

logger = logging.getLogger(__name__)
CPU = "CPUExecutionProvider"


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # No busy-spinning threads when idle; no arena that freed sessions would leave behind.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def providers_for(requested: Sequence[str]) -> list[str]:
    """The requested execution providers this ONNX Runtime build has, in order, then the CPU (the fallback
    for what they do not run, and for all of it where none is here: e.g. CUDA without the `gpu` extra)."""
    available = ort.get_available_providers()
    chosen = [name for name in requested if name in available and name != CPU]
    missing = [name for name in requested if name not in available]
    if missing:
        logger.warning("ONNX Runtime here has no %s (CUDA comes with the `gpu` extra, onnxruntime-gpu): serving "
                       "on %s", ", ".join(missing), ", ".join([*chosen, CPU]))
    return [*chosen, CPU]


def serving_session(model: bytes | Path, threads: int = 1, providers: Sequence[str] = (CPU,)) -> ort.InferenceSession:
    """A session configured as the student server configures its own (the CPU unless told otherwise)."""
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, session_options(threads), providers=providers_for(providers))
