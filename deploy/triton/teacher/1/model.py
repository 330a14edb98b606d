"""Triton Python-backend model serving a Rec-Distill teacher checkpoint (stand-alone Triton).

The container needs `pip install recdistill` (torch + this package). The checkpoint directory and the
model's settings are the `parameters` of config.pbtxt (`recdistill teacher triton-config`). The model is the
one `recdistill teacher serve` runs: `teacher_service.triton_model`.
"""

from teacher_service.triton_model import TritonPythonModel

__all__ = ["TritonPythonModel"]
