"""Data-parallel training under `torchrun` (DDP): gloo on CPU, nccl on GPU. Outside torchrun everything
here is a no-op and training runs in one process, as before."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_from_env() -> Ranks | None:
    """Join the process group torchrun describes (WORLD_SIZE > 1), once; None when not under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return current()


def current() -> Ranks | None:
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return Ranks(dist.get_rank(), dist.get_world_size())


def barrier() -> None:
    if current() is not None:
        dist.barrier()
