"""The one way Rec-Distill replaces a file: write a temporary file beside it, then rename it over the
target, so readers see the old content or the new one, never a mix; and the one way it publishes a new
directory (a model version, a teacher checkpoint): fill a temporary directory beside it, then rename it.

Durability is explicit: with `durable=True` (the default) the data is fsync'ed before the rename and
the directory after it, so the new content survives a power loss once the call returns; `durable=False`
keeps the all-or-nothing rename but leaves flushing to the OS (caches, reports, plots).
"""

from __future__ import annotations

import contextlib
import os
import shutil
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


@contextlib.contextmanager
def publish_directory(target: Path) -> Iterator[Path]:
    """A temporary directory beside `target` to fill; when the block exits cleanly it becomes `target` in one
    rename, durably (every file in it and the parent directory fsync'ed first); on failure it is removed.
    `FileExistsError` when `target` exists (an empty leftover directory is replaced)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        for path in tmp.rglob("*"):
            if path.is_file():
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
        if target.exists():
            target.rmdir()  # an empty leftover only: a directory with content raises (OSError)
        os.replace(tmp, target)
        fsync_directory(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
