"""Serve a teacher checkpoint behind a real NVIDIA Triton Inference Server (PyTriton, embedded)."""

from __future__ import annotations

import logging
import os
import signal
import sysconfig
import threading
from types import FrameType

import torch

from recdistill.core.contracts.teacher import TeacherTensorSpec
from teacher_service.checkpoint import load_checkpoint
from teacher_service.inference import TeacherInference
from teacher_service.sequence_train import resolve_device
from teacher_service.settings import TeacherServeSettings

logger = logging.getLogger(__name__)


def ensure_libpython_on_library_path() -> None:
    """Triton's Python-backend stub must find this interpreter's own libpython (see DESIGN.md);
    without it the model fails to load with a `_thread.RLock ... _recursion_count` error."""
    libdir = sysconfig.get_config_var("LIBDIR")
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir and libdir not in current.split(":"):
        os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir


def build_triton(settings: TeacherServeSettings):  # -> pytriton.triton.Triton
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    ensure_libpython_on_library_path()
    model, schema, manifest = load_checkpoint(settings.checkpoint)
    device = resolve_device(settings.device)
    model.to(device)
    torch.set_num_threads(settings.threads_per_instance * settings.instances)
    infer_funcs = [TeacherInference(model, schema, settings.max_candidates, settings.max_history, device)
                   for _ in range(settings.instances)]
    config = TritonConfig(
        http_address="127.0.0.1", http_port=settings.http_port,
        grpc_address="127.0.0.1", grpc_port=settings.grpc_port,
        metrics_address="127.0.0.1", metrics_port=settings.metrics_port,
        allow_metrics=True, exit_timeout_secs=10,
    )
    triton = Triton(config=config)
    spec = TeacherTensorSpec.from_schema(schema)
    triton.bind(
        model_name=settings.model_name,
        infer_func=infer_funcs,
        inputs=[Tensor(name=t.name, dtype=t.numpy_dtype, shape=t.dims) for t in spec.inputs],
        outputs=[Tensor(name=spec.output.name, dtype=spec.output.numpy_dtype, shape=spec.output.dims)],
        config=ModelConfig(
            max_batch_size=settings.max_batch_size,
            batcher=DynamicBatcher(max_queue_delay_microseconds=settings.max_queue_delay_us),
        ),
        strict=True,
    )
    logger.info("teacher %s (schema %s) bound as Triton model '%s' on %s with %d instance(s) x %d thread(s)",
                manifest["teacher_version"], schema.hash, settings.model_name, device, settings.instances,
                settings.threads_per_instance)
    return triton


def serve(settings: TeacherServeSettings) -> None:
    """Start Triton, wait until SIGTERM/SIGINT (or Triton dies), then stop it cleanly."""
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s, stopping Triton", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    triton = build_triton(settings)
    try:
        triton.run()
        logger.info("Triton ready: gRPC 127.0.0.1:%d, HTTP 127.0.0.1:%d, metrics 127.0.0.1:%d",
                    settings.grpc_port, settings.http_port, settings.metrics_port)
        while not stop.wait(1.0):
            if not triton.is_alive():
                logger.error("Triton stopped unexpectedly")
                raise SystemExit(1)
    finally:
        triton.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logger.info("Triton stopped")
