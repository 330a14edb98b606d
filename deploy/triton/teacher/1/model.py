"""Triton Python-backend model serving a Rec-Distill teacher checkpoint (stand-alone Triton).

The container needs `pip install recdistill` (torch + this package). The checkpoint directory is
given by the `checkpoint` parameter of config.pbtxt. Validation and batching are the same code as the
embedded server (`teacher_service.inference.TeacherInference`).
"""

import json
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from teacher_service.checkpoint import load_checkpoint
from recdistill.core.contracts.teacher import TEACHER_OUTPUT
from teacher_service.inference import TeacherInference



class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        checkpoint = Path(config["parameters"]["checkpoint"]["string_value"])
        model, schema, _ = load_checkpoint(checkpoint)
        device = "cuda" if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available() else "cpu"
        model.to(device)
        self.inference = TeacherInference(model, schema, max_candidates=1_000, max_history=20_000)
        self.device = device

    def execute(self, requests):
        responses = []
        for request in requests:
            data = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inference.input_names}
            try:
                self.inference.validate(data)
                with torch.inference_mode():
                    inputs = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in data.items()}
                    probabilities = self.inference.model(**inputs).cpu().numpy()
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(TEACHER_OUTPUT, probabilities)]))
            except ValueError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
