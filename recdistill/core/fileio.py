"""The one way Rec-Distill replaces a file: write a temporary file beside it, then rename it over the
target, so readers see the old content or the new one, never a mix.

Durability is explicit: with `durable=True` (the default) the data is fsync'ed before the rename and
the directory after it, so the new content survives a power loss once the call returns; `durable=False`
keeps the all-or-nothing rename but leaves flushing to the OS (caches, reports, plots).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


def fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb", durable: bool = True) -> Iterator[IO]:
    """A file object for writing `path`'s new content; it replaces `path` when the block exits cleanly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, mode) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    if durable:
        fsync_directory(path.parent)


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    with atomic_open(path, "wb", durable) as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode(), durable)


def atomic_write_with(path: Path, write: Callable[[IO[bytes]], object], durable: bool = True) -> None:
    """For writers that take a file object (torch.save, pyarrow): `write(handle)`, then the rename."""
    with atomic_open(path, "wb", durable) as handle:
        write(handle)
