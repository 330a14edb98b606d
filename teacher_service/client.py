"""A minimal synchronous Triton gRPC client for the teacher: encoder tensors in, probabilities out.

The distill worker has its own asynchronous, batched, retried client; this one serves the CLI.
"""

from __future__ import annotations

import numpy as np

from recdistill.features.encoder import MODEL_INPUTS
from teacher_service.inference import OUTPUT


def infer_inputs(tensors: dict[str, np.ndarray], grpc_module: object) -> list[object]:
    """tritonclient InferInput objects for the encoder's tensors (grpc or grpc.aio module)."""
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    for name in MODEL_INPUTS:
        array = np.ascontiguousarray(tensors[name])
        tensor = grpc_module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))  # type: ignore[attr-defined]
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def score(url: str, tensors: dict[str, np.ndarray], model_name: str = "teacher", timeout_s: float = 30.0
          ) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url=url) as client:
        result = client.infer(model_name, infer_inputs(tensors, grpcclient),
                              outputs=[grpcclient.InferRequestedOutput(OUTPUT)], client_timeout=timeout_s)
    return result.as_numpy(OUTPUT)
