"""Export the student's serving graph to ONNX and check ONNX Runtime against torch on it (parity)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnxruntime as ort
import torch

from recdistill.core.features.encoder import MODEL_INPUTS

OUTPUT = "probability"
PARITY_TOLERANCE = 1e-5
_DYNAMIC = {"hist_item": {1: "history"}, "hist_action": {1: "history"}, "hist_recency": {1: "history"},
            "cand_item": {1: "candidates"}, "cand_genres": {1: "candidates"}, "cand_year": {1: "candidates"}}


def export_onnx(model: torch.nn.Module, example: dict[str, np.ndarray]) -> bytes:
    """The model's forward (serving probabilities) as ONNX, with dynamic batch, history and candidates."""
    model.eval()
    args = tuple(torch.from_numpy(example[name]) for name in MODEL_INPUTS)
    axes = {name: {0: "batch"} | _DYNAMIC.get(name, {}) for name in MODEL_INPUTS}
    axes[OUTPUT] = {0: "batch", 1: "candidates"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(model, args, buffer, input_names=list(MODEL_INPUTS), output_names=[OUTPUT],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return buffer.getvalue()


def parity(onnx_model: bytes, model: torch.nn.Module, probe: dict[str, np.ndarray]) -> float:
    """Max absolute difference between ONNX Runtime and torch on the probe tensors."""
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    served = session.run(None, {name: probe[name] for name in MODEL_INPUTS})[0]
    with torch.inference_mode():
        reference = model(**{name: torch.from_numpy(probe[name]) for name in MODEL_INPUTS}).numpy()
    return float(np.max(np.abs(served - reference)))
