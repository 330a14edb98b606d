"""The teacher's contracts: its checkpoint's `manifest.json` (`TeacherManifest`), and its black-box serving
contract: the Triton model's input tensors (the shared encoder's tensors for the teacher's view) and its one
output, probabilities per candidate. The Triton model binds these, the worker's client sends them, and the
Triton model config is generated from them (`triton_model_config`), so no copy of the spec is kept by hand.

The manifest carries `format`; a reader that meets another format stops with an error naming it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
from msgspec import Struct

from recdistill.core.contracts.dataset import Task
from recdistill.core.contracts.versioned import decode_versioned
from recdistill.core.features.encoder import Encoder, TensorSpec
from recdistill.core.features.schema import FeatureSchema

TEACHER_MODEL_NAME = "teacher"
TEACHER_OUTPUT = "probability"
TEACHER_VIEW = "teacher"
TEACHER_MANIFEST_FORMAT = 1


class TeacherDataWindow(Struct, frozen=True, kw_only=True):
    """The events the teacher trained on (its labels are fresh up to `train_end_ts`)."""

    train_start_ts: int
    train_end_ts: int
    train_events: int


class ScoreStack(Struct, frozen=True, kw_only=True):
    """The sequence teacher's served logit stacked with the hard search's match count, fitted on the valid
    window before the gate's holdout: weights of [score, log(1 + matches), matches > 0, 1], and the pooled valid
    AUC before and after (kept only where it rose; the identity otherwise)."""

    weights: tuple[float, ...]
    valid_auc_before: float
    valid_auc_after: float
    kept: bool


class TeacherManifest(Struct, frozen=True, kw_only=True):
    teacher_version: str  # names the weights: labels are keyed by it
    task: Task
    size: str
    family: Literal["attention", "sequence"] = "attention"
    config: dict[str, Any]  # the architecture: its family's config, each family with its own keys
    parameters: int
    schema_hash: str
    dataset: str
    data_window: TeacherDataWindow
    train: dict[str, Any]  # the training settings (TeacherTrainConfig)
    best_epoch: int
    history: list[dict[str, Any]]  # per epoch: loss, valid metrics, seconds
    valid: dict[str, float]  # metrics on the valid window (early stopping read it)
    test: dict[str, float]
    seconds: float
    stack: ScoreStack | None = None  # the sequence family's (None: not fitted, or another family)
    format: int = TEACHER_MANIFEST_FORMAT

    @property
    def history_limit(self) -> int | None:
        """The most recent events it reads (None: the whole history)."""
        return self.config.get("history_limit")

    @classmethod
    def read(cls, path: Path) -> TeacherManifest:
        """`DataError` naming the file for an unknown format or a manifest that does not parse."""
        return decode_versioned(path.read_bytes(), cls, TEACHER_MANIFEST_FORMAT, f"{path}: teacher manifest",
                                "upgrade, or train the teacher again")

    def to_json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2)


class TeacherTensorSpec(Struct, frozen=True):
    inputs: tuple[TensorSpec, ...]
    output: TensorSpec

    @classmethod
    def from_schema(cls, schema: FeatureSchema) -> TeacherTensorSpec:
        """The encoder's tensors of the schema's teacher view, in the encoder's order."""
        inputs = tuple(Encoder(schema, TEACHER_VIEW).input_specs.values())
        return cls(inputs, TensorSpec(TEACHER_OUTPUT, "FP32", (-1,)))

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)


def infer_inputs(tensors: dict[str, np.ndarray], client_module: object, names: Sequence[str] | None = None
                 ) -> list[object]:
    """tritonclient `InferInput`s for encoder tensors (`client_module`: tritonclient.grpc or .grpc.aio), in the
    encoder's order unless `names` says otherwise."""
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    for name in names or tuple(tensors):
        array = np.ascontiguousarray(tensors[name])
        tensor = client_module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))  # type: ignore[attr-defined]
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def triton_model_config(spec: TeacherTensorSpec, model_name: str = TEACHER_MODEL_NAME, max_batch_size: int = 64,
                        max_queue_delay_us: int = 0, *, instance_kind: Literal["KIND_CPU", "KIND_GPU"],
                        instances: int = 1,
                        checkpoint: str = "/models/teacher-checkpoint",
                        parameters: Mapping[str, str | int] | None = None) -> str:
    """`config.pbtxt` of a Triton Python-backend model serving a teacher checkpoint (`teacher_service.triton_model`):
    the stand-alone container's and the one `recdistill teacher serve` generates. `parameters` (e.g. threads,
    device, max_candidates) reach the model's `initialize` next to the checkpoint. `instance_kind` follows the
    device the model runs on (`teacher_service.device.triton_kind`): no default here."""
    def tensor(t: TensorSpec) -> str:
        return f'  {{ name: "{t.name}" data_type: TYPE_{t.dtype} dims: [ {", ".join(map(str, t.dims))} ] }}'

    lines = [
        "# Generated from recdistill.core.contracts.teacher.TeacherTensorSpec: do not edit by hand",
        "# (`recdistill teacher triton-config`). The same model as `recdistill teacher serve` runs.",
        f'name: "{model_name}"',
        'backend: "python"',
        f"max_batch_size: {max_batch_size}",
        "",
        "input [",
        ",\n".join(tensor(t) for t in spec.inputs),
        "]",
        "output [",
        tensor(spec.output),
        "]",
        "",
        "dynamic_batching {",
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
        "",
        "instance_group [",
        f"  {{ count: {instances} kind: {instance_kind} }}",
        "]",
        "",
        *(f'parameters: {{ key: "{key}" value: {{ string_value: "{value}" }} }}'
          for key, value in {"checkpoint": checkpoint, **(parameters or {})}.items()),
    ]
    return "\n".join(lines) + "\n"
