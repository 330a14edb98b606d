"""ONNX Runtime session options: one definition for the student server and the worker's gate, so the
gate measures latency and scores the way the server will serve."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


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


def serving_session(model: bytes | Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU session configured as the student server configures its own."""
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, session_options(threads), providers=["CPUExecutionProvider"])
