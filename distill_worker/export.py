"""Export the student's serving graph to ONNX and check ONNX Runtime against torch on it (parity)."""

from __future__ import annotations

import io
import threading
import warnings

import numpy as np
import onnxruntime as ort
import torch

from recdistill.core.nn import Positional

OUTPUT = "probability"
PARITY_TOLERANCE = 1e-5
# torch.onnx keeps its exporter's state in module globals: one export at a time in a process (the scenarios'
# trainers of one worker process publish from their own threads).
_EXPORTING = threading.Lock()


def _dynamic_axes(name: str) -> dict[int, str]:
    if name.startswith("hist_") and name != "hist_length":
        return {0: "batch", 1: "history"}
    if name.startswith("cand_"):
        return {0: "batch", 1: "candidates"}
    return {0: "batch"}


def export_onnx(model: torch.nn.Module, example: dict[str, np.ndarray]) -> bytes:
    """The model's forward (serving probabilities) as ONNX, with dynamic batch, history and candidates;
    its inputs are the encoder's tensors of the model's view, in the encoder's order (`example`)."""
    model.eval()
    names = tuple(example)
    args = tuple(torch.from_numpy(example[name]) for name in names)
    axes = {name: _dynamic_axes(name) for name in names} | {OUTPUT: {0: "batch", 1: "candidates"}}
    buffer = io.BytesIO()
    with _EXPORTING, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        # The wrapper in eval mode too: the exporter restores the mode it found, recursively, after exporting.
        torch.onnx.export(Positional(model, names).eval(), args, buffer, input_names=list(names), output_names=[OUTPUT],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return buffer.getvalue()


def parity(onnx_model: bytes, model: torch.nn.Module, probe: dict[str, np.ndarray]) -> float:
    """Max absolute difference between ONNX Runtime and torch on the probe tensors."""
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    served = session.run(None, dict(probe))[0]
    with torch.inference_mode():
        reference = model(**{name: torch.from_numpy(tensor) for name, tensor in probe.items()}).numpy()
    return float(np.max(np.abs(served - reference)))
