"""The distill worker: teacher client, debiasing, student training (batch + stream), export, promotion.

Its face: other packages import these names from here, never from the rooms (`recdistill.core.faces`)."""

from __future__ import annotations

from recdistill.core.faces import lazy_face

_ROOMS = {
    "BatchPhase": "batch",
    "run_batch": "batch",
    "Calibration": "debias",
    "export_onnx": "export",
    "SharedLabelStore": "label_log",
    "Labeller": "labeller",
    "labeller_main": "labeller",
    "onnx_metrics": "promote",
    "onnx_scores": "promote",
    "promote_version": "promote:promote",
    "DistillConfig": "settings",
    "GateConfig": "settings",
    "StreamConfig": "settings",
    "TeacherClientSettings": "settings",
    "WorkerSettings": "settings",
    "StreamHooks": "stream",
    "StreamPhase": "stream",
    "StreamTrainer": "stream",
    "stream_main": "stream",
    "StepResult": "stream.consumer",
    "StudentConfig": "student",
    "StudentModel": "student",
    "TeacherClient": "teacher_client",
    "distill_loss": "trainer",
}
__all__, __getattr__ = lazy_face(__name__, _ROOMS)
