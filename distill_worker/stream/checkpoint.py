"""The stream's checkpoint (`stream.pt`): the student's weights and optimizer, saved by torch and loaded with
`weights_only=True`, and the typed `StreamState` (`recdistill.core.contracts.worker`), written atomically
after each step that changed anything. A crash anywhere resumes from the last one."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from recdistill.core.contracts.worker import StreamCheckpoint, StreamState
from recdistill.core.fileio import atomic_write_with


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: StreamState
                    ) -> None:
    saved = StreamCheckpoint(state=state, saved_unix=time.time()).to_torch(model.state_dict(), optimizer.state_dict())
    atomic_write_with(path, lambda handle: torch.save(saved, handle))


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> StreamState:
    """Restores the weights and optimizer in place; returns the state. An unknown format is refused with a
    `DataError` naming it, before anything is restored."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint = StreamCheckpoint.from_torch(saved, str(path))
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    return checkpoint.state
