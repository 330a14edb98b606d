"""The teacher as a Triton Python-backend model: Triton runs it in its backend stub process, one process per
model instance, and hands each dynamic batch to `execute` through shared memory. No proxy sits between
Triton and the model (see BENCHMARKS.md, the teacher's profile).

Used by `recdistill teacher serve` (the Triton that the nvidia-pytriton wheel ships) and by a stand-alone
Triton container alike (`deploy/triton/teacher/1/model.py` imports this class). Its settings come from the
`parameters` of the generated config.pbtxt (`recdistill.core.contracts.teacher.triton_model_config`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from recdistill.core.contracts.teacher import TEACHER_OUTPUT
from recdistill.core.features.request import MAX_CANDIDATES, MAX_HISTORY_EVENTS
from teacher_service.checkpoint import load_checkpoint
from teacher_service.device import resolve_device
from teacher_service.inference import BadTeacherInput, TeacherInference

logger = logging.getLogger(__name__)


class TritonPythonModel:
    """Triton's Python-backend interface: `initialize` once per instance, `execute` once per batch."""

    def initialize(self, args: dict[str, Any]) -> None:
        parameters = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        torch.set_num_threads(int(parameters.get("threads", "1")))
        model, schema, manifest = load_checkpoint(Path(parameters["checkpoint"]))
        device = resolve_device(parameters.get("device", "auto"))
        self.inference = TeacherInference(model.to(device), schema,
                                          int(parameters.get("max_candidates", MAX_CANDIDATES)),
                                          int(parameters.get("max_history", MAX_HISTORY_EVENTS)), device)
        logger.info("teacher %s loaded on %s (instance %s, %d torch threads)", manifest.teacher_version,
                    device, args.get("model_instance_name"), torch.get_num_threads())

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils  # exists only inside Triton's backend stub

        names = self.inference.input_names
        data = [{name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in names} for r in requests]
        responses = []
        for outcome in self.inference.score_requests(data):
            if isinstance(outcome, BadTeacherInput):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(outcome))))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(TEACHER_OUTPUT, outcome)]))
        return responses
