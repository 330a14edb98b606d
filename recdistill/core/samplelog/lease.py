"""The trainer lease: one worker trains from a sample log at a time; the others are hot standbys that take
over once it stops. One interface (`TrainerLease`) with a backend each, chosen by the log's location
(`open_lease`), so the stream's driver never asks which backend it runs on:

- a file log: an exclusive `flock` on `<log dir>/.trainer.lock`, held while the worker lives; the kernel
  drops it when the process dies, so a standby takes over at its next try;
- a Redis log: a key with a TTL, renewed every step (`recdistill.core.samplelog.redis.RedisTrainerLease`).
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import IO, Protocol

from recdistill.core.samplelog.entry import DEFAULT_GROUP
from recdistill.core.samplelog.source import LogLocation


class TrainerLease(Protocol):
    owner: str
    ttl_ms: int  # how long a holder may go without renewing (a standby polls a few times within it)

    def acquire(self) -> bool:
        """Take the lease if nobody holds it (or this owner does); never blocks."""

    def renew(self) -> bool:
        """True while this owner still holds the lease (extended); False once it was lost."""

    def holder(self) -> str | None:
        """Who holds it now, if anyone (for logs and reports)."""

    def release(self) -> None:
        """Give it up (a standby may take it at once)."""


class FileTrainerLease:
    def __init__(self, directory: Path, owner: str, ttl_s: float = 5.0, group: str = DEFAULT_GROUP) -> None:
        self.path = directory / (".trainer.lock" if group == DEFAULT_GROUP else f".trainer.{group}.lock")
        self.owner = owner
        self.ttl_ms = int(ttl_s * 1000)
        self._handle: IO[str] | None = None

    def acquire(self) -> bool:
        if self._handle is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(self.owner)
        handle.flush()
        self._handle = handle
        return True

    def renew(self) -> bool:
        return self._handle is not None  # a flock is held until released or the process dies: nothing to extend

    def holder(self) -> str | None:
        try:
            return self.path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.truncate(0)
            self._handle.close()  # closing the last descriptor releases the flock
            self._handle = None


def open_lease(location: LogLocation, owner: str, ttl_s: float = 5.0, group: str = DEFAULT_GROUP) -> TrainerLease:
    """The trainer lease of consumer group `group`: one trainer at a time per scenario."""
    if location.kind == "redis":
        from recdistill.core.samplelog.redis import RedisLogConfig, RedisTrainerLease

        return RedisTrainerLease(RedisLogConfig(location.target).in_group(group), owner, ttl_s)
    return FileTrainerLease(location.directory, owner, ttl_s, group)
