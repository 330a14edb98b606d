"""A minimal synchronous Triton gRPC client for the teacher: encoder tensors in, probabilities out.

The distill worker has its own asynchronous, batched, retried client; this one serves the CLI.
"""

from __future__ import annotations

import numpy as np

from recdistill.core.contracts.teacher import TEACHER_OUTPUT, infer_inputs


def score(url: str, tensors: dict[str, np.ndarray], model_name: str = "teacher", timeout_s: float = 30.0
          ) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url=url) as client:
        result = client.infer(model_name, infer_inputs(tensors, grpcclient),
                              outputs=[grpcclient.InferRequestedOutput(TEACHER_OUTPUT)], client_timeout=timeout_s)
    return result.as_numpy(TEACHER_OUTPUT)
