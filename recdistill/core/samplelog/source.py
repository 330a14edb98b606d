"""The sample log's interface: where it is (`LogLocation`), how servers write (`LogWriter`) and how the
worker reads (`LogSource`), whatever the backend.

The worker's checkpoint is the truth about what it has taken: a source reads from the positions the
checkpoint holds, and `commit` (after each checkpoint) tells the backend what it may forget or re-deliver
no more. A source with `at_least_once` may deliver an entry again (a broker re-delivering after a
worker died, a writer retrying a batch): the worker then de-duplicates by sample id, with `seen` as the
memory of ids it committed before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Literal, Protocol

from pydantic import BeforeValidator

from recdistill.core.errors import ConfigError
from recdistill.core.samplelog.entry import DEFAULT_GROUP, LogEntry, Position
from recdistill.core.samplelog.file import SampleLog, claim_partition


@dataclass(frozen=True)
class LogLocation:
    """`file:DIR` (or a plain path) or `redis://HOST:PORT/N` (also `rediss://`, `unix://`)."""

    kind: Literal["file", "redis"]
    target: str  # the directory, or the Redis URL

    @classmethod
    def parse(cls, value: str | Path) -> LogLocation:
        text = str(value).strip()
        if text.startswith(("redis://", "rediss://", "unix://")):
            return cls("redis", text)
        if text.startswith("file:"):
            text = text.removeprefix("file:").removeprefix("//")
        elif "://" in text:
            raise ConfigError(f"sample log {value!r}: use file:DIR or redis://HOST:PORT/N")
        if not text:
            raise ConfigError("sample log: an empty location")
        return cls("file", text)

    @property
    def directory(self) -> Path:
        if self.kind != "file":
            raise ConfigError(f"the sample log at {self.target} is not a directory")
        return Path(self.target)

    def __str__(self) -> str:
        return self.target if self.kind == "redis" else f"file:{self.target}"


def _checked(value: object) -> str:
    try:
        return str(LogLocation.parse(value if isinstance(value, str | Path) else str(value)))
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc


# A settings field holding a sample-log location (a path is taken as file:PATH).
LogURL = Annotated[str, BeforeValidator(_checked)]


class LogWriter(Protocol):
    def append(self, payloads: list[bytes]) -> int: ...

    def close(self) -> None: ...


class LogSource(Protocol):
    at_least_once: bool

    def read(self, positions: Mapping[str, Position], max_records: int) -> tuple[list[LogEntry], set[str]]:
        """Entries after `positions`, and the partitions that still have more to read (a backlog)."""
        ...

    def seen(self, keys: Sequence[str]) -> list[bool]:
        """Whether each sample id was committed before (always False where delivery is exactly once)."""
        ...

    def commit(self, positions: Mapping[str, Position], keys: Sequence[str]) -> None:
        """The checkpoint now holds everything up to `positions`, and these sample ids."""
        ...

    def committed(self) -> dict[str, Position]:
        """Where the group committed last, for a reader that keeps no checkpoint of its own (the labeller):
        file, the offsets; redis, none (the group re-delivers its pending entries itself)."""
        ...

    def close(self) -> None: ...


class FileSource:
    """Every partition directory under `root`, each read from its checkpointed offset."""

    at_least_once = False

    def __init__(self, root: Path, consumer: str = DEFAULT_GROUP) -> None:
        self.root = root
        self.consumer = consumer  # its committed offsets, which retention waits for
        self._logs: dict[str, SampleLog] = {}  # kept open: a reader's cost per poll is the new data
        self._committed: dict[str, Position] = {}

    def _log(self, partition: str) -> SampleLog:
        if partition not in self._logs:
            self._logs[partition] = SampleLog(self.root / partition)
        return self._logs[partition]

    def partitions(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.exists() else []

    @property
    def corrupt_records(self) -> int:
        return sum(log.corrupt_records for log in self._logs.values())

    def read(self, positions: Mapping[str, Position], max_records: int) -> tuple[list[LogEntry], set[str]]:
        entries, behind = [], set()
        for partition in self.partitions():
            records = self._log(partition).read(int(positions.get(partition, 0)), max_records)
            entries += [LogEntry(partition, offset + 1, payload) for offset, payload in records]
            if len(records) >= max_records:
                behind.add(partition)
        return entries, behind

    def seen(self, keys: Sequence[str]) -> list[bool]:
        return [False] * len(keys)

    def commit(self, positions: Mapping[str, Position], keys: Sequence[str]) -> None:
        """The consumer offsets (each only when it moved), which let retention delete read segments."""
        for partition, offset in positions.items():
            if self._committed.get(partition) != offset:
                self._log(partition).commit(self.consumer, int(offset))
                self._committed[partition] = offset

    def committed(self) -> dict[str, Position]:
        return {partition: self._log(partition).committed(self.consumer) for partition in self.partitions()}

    def close(self) -> None:
        self._logs.clear()


def open_writer(location: LogLocation, server_id: str, min_segments: int = 2
                ) -> tuple[LogWriter, str, IO | None]:
    """(writer, where it writes, the partition lock to hold while writing: file only)."""
    if location.kind == "redis":
        from recdistill.core.samplelog.redis import RedisLogConfig, RedisStreamWriter

        config = RedisLogConfig(url=location.target)
        return RedisStreamWriter(config), f"{config.url} stream {config.stream}", None
    partition, lock = claim_partition(location.directory, server_id)
    return SampleLog(location.directory / partition, min_segments=min_segments), f"partition {partition}", lock


class LogScan(Protocol):
    def read(self, positions: Mapping[str, Position], max_records: int) -> tuple[list[LogEntry], set[str]]:
        """Entries after `positions` (every partition), and the partitions with more to read."""
        ...

    def close(self) -> None: ...


def open_scan(location: LogLocation) -> LogScan:
    """A reader of every entry after the positions it is given, keeping no position anywhere (no consumer
    group, no committed offset)."""
    if location.kind == "redis":
        from recdistill.core.samplelog.redis import RedisLogConfig, RedisStreamScan

        return RedisStreamScan(RedisLogConfig(url=location.target))
    return FileSource(location.directory)


def group_done(location: LogLocation, group: str) -> dict[str, Position]:
    """How far consumer group `group` is done, per partition, in the positions its readers keep (file: the
    committed next offset; redis: the last entry id acknowledged before any pending one)."""
    if location.kind == "redis":
        from recdistill.core.samplelog.redis import RedisLogConfig
        from recdistill.core.samplelog.redis import group_done as redis_group_done

        return redis_group_done(RedisLogConfig(url=location.target).in_group(group))
    source = FileSource(location.directory, group)
    try:
        return source.committed()
    finally:
        source.close()


def open_source(location: LogLocation, consumer: str, group: str = DEFAULT_GROUP) -> LogSource:
    """The worker's reader in consumer group `group` (one per scenario's trainer); `consumer` names this worker
    in it (redis)."""
    if location.kind == "redis":
        from recdistill.core.samplelog.redis import RedisLogConfig, RedisStreamSource

        return RedisStreamSource(RedisLogConfig(url=location.target).in_group(group), consumer)
    return FileSource(location.directory, group)
