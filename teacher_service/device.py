"""Where the teacher runs: `Device` (auto, cpu or cuda), resolved once where a job starts (the CLI, `teacher serve`
before Triton starts, a Triton instance) and handed to training and serving as a `torch.device`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal, get_args

from recdistill.core.errors import DataError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)
Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)


def resolve_device(requested: str) -> torch.device:
    """`auto`: CUDA when there is one, else the CPU (and it says so); `cuda` without CUDA: a clear error."""
    import torch  # here: the settings that name a device load without it

    if requested not in DEVICES:
        raise DataError(f"device must be {', '.join(DEVICES)}, not {requested!r}")
    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise DataError("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False); "
                        "use --device cpu or auto")
    if requested == "auto" and not available:
        logger.info("--device auto: no CUDA device here, running on the CPU")
    return torch.device("cuda" if requested == "cuda" or (requested == "auto" and available) else "cpu")


def triton_kind(device_type: str) -> Literal["KIND_CPU", "KIND_GPU"]:
    """The Triton instance kind of a teacher on a device of this type ("cpu" or "cuda")."""
    return "KIND_GPU" if device_type == "cuda" else "KIND_CPU"
