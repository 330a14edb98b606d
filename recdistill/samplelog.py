"""A durable, append-only log of framed, checksummed msgpack records, in rotating segment files.

One writer per log directory (each serving process writes its own partition); any number of readers.
Frame: 4-byte magic, uint32 payload length, uint32 crc32 of the payload, payload (msgpack).
A record's offset is its position in the whole log (0, 1, 2, ...); a segment file is named by the
offset of its first record. Consumers commit the next offset they want, atomically, per name.

Crash safety: a crash can only tear the last record of the last segment. Readers stop at a frame
that is incomplete or fails its checksum; a writer that opens the log truncates such a torn tail
before appending, so every record that was fully written stays readable and none is read twice.
"""

from __future__ import annotations

import logging
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack

logger = logging.getLogger(__name__)

MAGIC = b"RDL1"
HEADER = struct.Struct("<4sII")
SEGMENT_GLOB = "segment-*.log"


def _segment_name(first_offset: int) -> str:
    return f"segment-{first_offset:020d}.log"


def _frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(end position, payload) of every intact frame, stopping at the first torn or corrupt one."""
    position = 0
    while position + HEADER.size <= len(data):
        magic, length, crc = HEADER.unpack_from(data, position)
        end = position + HEADER.size + length
        if magic != MAGIC or end > len(data):
            return
        payload = data[position + HEADER.size:end]
        if zlib.crc32(payload) != crc:
            return
        yield end, payload
        position = end


class SampleLog:
    def __init__(self, directory: Path, segment_bytes: int = 64 << 20, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "consumers").mkdir(exist_ok=True)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._writer: Any = None
        self._next_offset: int | None = None

    # ---- segments ----------------------------------------------------------------------------
    def _segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.glob(SEGMENT_GLOB):
            try:
                found.append((int(path.stem.split("-")[1]), path))
            except (IndexError, ValueError):
                logger.warning("ignoring a foreign file in the sample log: %s", path)
        return sorted(found)

    # ---- writing -----------------------------------------------------------------------------
    def _open_for_append(self) -> None:
        segments = self._segments()
        if not segments:
            self._start_segment(0)
            return
        first, path = segments[-1]
        data = path.read_bytes()
        count, good_end = 0, 0
        for good_end, _ in _frames(data):  # noqa: B007 - the last end is what we need
            count += 1
        if good_end < len(data):
            logger.warning("sample log %s: truncating a torn tail of %d bytes", path, len(data) - good_end)
            with path.open("r+b") as handle:
                handle.truncate(good_end)
        self._next_offset = first + count
        self._writer = path.open("ab")

    def _start_segment(self, first_offset: int) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = (self.directory / _segment_name(first_offset)).open("ab")
        self._next_offset = first_offset

    def append(self, records: list[dict[str, Any]]) -> int:
        """Append records durably (one write and one fsync for the batch); returns the next offset."""
        if self._writer is None:
            self._open_for_append()
        if self._writer.tell() >= self.segment_bytes:
            self._start_segment(self._next_offset)  # type: ignore[arg-type]
        frames = []
        for record in records:
            payload = msgpack.packb(record, use_bin_type=True)
            frames.append(HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload)
        self._writer.write(b"".join(frames))
        self._writer.flush()
        if self.fsync:
            os.fsync(self._writer.fileno())
        self._next_offset += len(records)  # type: ignore[operator]
        return self._next_offset  # type: ignore[return-value]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ---- reading -----------------------------------------------------------------------------
    def read(self, from_offset: int, max_records: int = 10_000) -> list[tuple[int, dict[str, Any]]]:
        """Up to `max_records` (offset, record) pairs starting at `from_offset`."""
        out: list[tuple[int, dict[str, Any]]] = []
        segments = self._segments()
        for index, (first, path) in enumerate(segments):
            next_first = segments[index + 1][0] if index + 1 < len(segments) else None
            if next_first is not None and next_first <= from_offset:
                continue
            offset = first
            for _, payload in _frames(path.read_bytes()):
                if offset >= from_offset:
                    out.append((offset, msgpack.unpackb(payload, raw=False)))
                    if len(out) >= max_records:
                        return out
                offset += 1
        return out

    def end_offset(self) -> int:
        """The offset the next record will get (readers: how far the log goes now)."""
        segments = self._segments()
        if not segments:
            return 0
        first, path = segments[-1]
        return first + sum(1 for _ in _frames(path.read_bytes()))

    # ---- consumer offsets --------------------------------------------------------------------
    def _offset_path(self, consumer: str) -> Path:
        if not consumer.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"consumer name must be alphanumeric (with - or _), got {consumer!r}")
        return self.directory / "consumers" / f"{consumer}.offset"

    def committed(self, consumer: str) -> int:
        path = self._offset_path(consumer)
        return int(path.read_text()) if path.exists() else 0

    def commit(self, consumer: str, next_offset: int) -> None:
        path = self._offset_path(consumer)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
            handle.write(str(next_offset))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
