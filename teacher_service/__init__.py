"""The teacher: a long-sequence ranking model, its training job and its Triton serving.

Its face: other packages import these names from here, never from the rooms (`recdistill.core.faces`)."""

from __future__ import annotations

from recdistill.core.faces import lazy_face

_ROOMS = {
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "score": "client",
    "resolve_device": "device",
    "triton_kind": "device",
    "family_of": "families",
    "teacher_process": "launcher",
    "TEACHER_SIZES": "model",
    "TeacherModel": "model",
    "SEQUENCE_SIZES": "sequence",
    "SequenceTeacher": "sequence",
    "check_memory": "sequence_train",
    "train_step": "sequence_train",
    "training_windows": "sequence_train",
    "window_batch": "sequence_train",
    "ALLOCATOR_THRESHOLD": "serve",
    "ensure_libpython_on_library_path": "serve",
    "serve_teacher": "serve:serve",
    "TeacherServeSettings": "settings",
    "TeacherTrainConfig": "train",
    "architecture": "train",
    "train_teacher": "train",
}
__all__, __getattr__ = lazy_face(__name__, _ROOMS)
