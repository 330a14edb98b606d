"""A durable, append-only log of framed, checksummed records, in rotating segment files: the embedded
(one machine) sample log. Payloads are opaque bytes; `recdistill.core.contracts.records` gives them
their versioned meaning.

One writer per log directory (a partition); any number of readers. A writer claims its partition with
an exclusive lock (`claim_partition`), so a restarted server appends to the partition its predecessor
wrote, and two live processes never share one.

Frame: 4-byte magic `RDL2`, uint32 payload length, uint32 crc32 of the payload, uint32 crc32 of those
12 header bytes, payload. The header's own checksum makes a damaged length field plain at once (it is
skipped like a damaged payload), instead of a frame that seems to wait for megabytes that never come.
Frames of the first format (`RDL1`: no header checksum) written by older versions are still read.
A record's offset is
its position in the whole log (0, 1, 2, ...); a segment file is named by the offset of its first record.
Consumers commit the next offset they want, atomically, per name.

Reading costs what is new: a reader remembers where in a segment each offset it reached starts, seeks
there and reads only the bytes after it (never a whole segment again).

Crash safety: a crash can only tear the last record of the last segment. Readers stop at a frame that
is incomplete or fails its checksum; a writer that opens the log truncates such a torn tail before
appending, so every record that was fully written stays readable and none is read twice. A write that
fails part-way (disk full) is cut back to the last whole record before the error is raised.

Retention: `retain()` deletes whole segments that every registered consumer has committed past, always
keeping the newest `min_segments`; with no consumer registered nothing is deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from recdistill.core.fileio import atomic_write_text

logger = logging.getLogger(__name__)

MAGIC_V1, MAGIC = b"RDL1", b"RDL2"
HEADER_V1 = struct.Struct("<4sII")  # magic, payload length, crc32 of the payload
HEADER = struct.Struct("<4sIII")  # the same, then the crc32 of those 12 bytes
SEGMENT_GLOB = "segment-*.log"
READ_CHUNK = 1 << 20
MAX_FRAME = 64 << 20  # a larger length field is corruption, not a record


def _segment_name(first_offset: int) -> str:
    return f"segment-{first_offset:020d}.log"


def frame(payload: bytes) -> bytes:
    head = HEADER_V1.pack(MAGIC, len(payload), zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def _header(data: bytes, position: int) -> tuple[int, int, int] | None:
    """(header size, payload length, payload crc32) of a frame header at `position` that can be trusted;
    None when the bytes there are not one (another magic, a header checksum that fails, too few bytes)."""
    magic = data[position:position + 4]
    if magic == MAGIC and position + HEADER.size <= len(data):
        _, length, crc, check = HEADER.unpack_from(data, position)
        if check != zlib.crc32(data[position:position + HEADER_V1.size]):
            return None
        size = HEADER.size
    elif magic == MAGIC_V1 and position + HEADER_V1.size <= len(data):
        _, length, crc = HEADER_V1.unpack_from(data, position)
        size = HEADER_V1.size
    else:
        return None
    return (size, length, crc) if length <= MAX_FRAME else None


def _intact(data: bytes, position: int) -> tuple[int, bytes] | None:
    """(end, payload) of the frame at `position` if it is whole and its checksums hold."""
    head = _header(data, position)
    if head is None:
        return None
    size, length, crc = head
    end = position + size + length
    if end > len(data):
        return None
    payload = bytes(data[position + size:end])
    return (end, payload) if zlib.crc32(payload) == crc else None


def _scan(data: bytes, final: bool) -> Iterator[tuple[int, bytes | None]]:
    """(end, payload) of each record from the start of `data`; payload None for a corrupt record, skipped by
    resynchronising on the next frame marker that starts an intact frame (it keeps its offset, so the
    offsets of the records after it never change). Stops before bytes it cannot decide on: an incomplete
    frame with no intact frame after it is a torn or in-progress tail. `final`: no more bytes will come
    (otherwise a corrupt-looking frame may just be incomplete, and the scan waits for more)."""
    position = 0
    while position + HEADER_V1.size <= len(data):
        frame_ = _intact(data, position)
        if frame_ is not None:
            yield frame_
            position = frame_[0]
            continue
        if not final:
            head = _header(data, position)
            if head is not None and position + head[0] + head[1] > len(data):
                return  # a sound header whose payload has not all arrived: wait for the rest
            if data[position:position + 4] == MAGIC and position + HEADER.size > len(data):
                return  # the header itself has not all arrived
        following = data.find(MAGIC[:3], position + 1)  # the next frame of either format
        while following >= 0 and _intact(data, following) is None:
            following = data.find(MAGIC[:3], following + 1)
        if following < 0:
            return  # nothing intact after it: a tail
        yield following, None
        position = following


class PartitionBusyError(RuntimeError):
    """Every partition name tried is held by another live writer."""


def claim_partition(root: Path, server_id: str, max_partitions: int = 256) -> tuple[str, IO]:
    """The lowest-numbered partition `<server_id>-<n>` under `root` that no live process holds, with the
    lock file that holds it (keep it open while writing). A restarted process gets its partition back."""
    root.mkdir(parents=True, exist_ok=True)
    for index in range(max_partitions):
        name = f"{server_id}-{index}"
        handle = (root / f".{name}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return name, handle
    raise PartitionBusyError(f"all {max_partitions} partitions of {server_id!r} under {root} are held")


class SampleLog:
    def __init__(self, directory: Path, segment_bytes: int = 64 << 20, fsync: bool = True,
                 min_segments: int = 2) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "consumers").mkdir(exist_ok=True)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.min_segments = max(1, min_segments)
        self._writer: IO[bytes] | None = None
        self._next_offset: int | None = None
        # Reader position cache: segment first offset -> (next offset, byte position of that offset).
        self._positions: dict[int, tuple[int, int]] = {}
        self.corrupt_records = 0  # records this reader skipped because their bytes were damaged

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
        for good_end, payload in _scan(data, final=True):  # noqa: B007 - the last end is what we need
            count += 1
            if payload is None:
                logger.error("sample log %s: a corrupt record (offset %d) is skipped, the records after it "
                             "are kept", path, first + count - 1)
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

    def append(self, payloads: list[bytes]) -> int:
        """Append records durably (one write and one fsync for the batch); returns the next offset.
        On failure nothing of the batch stays in the log."""
        if self._writer is None:
            self._open_for_append()
        assert self._writer is not None
        assert self._next_offset is not None
        if self._writer.tell() >= self.segment_bytes:
            self._start_segment(self._next_offset)
            self.retain()
        before = self._writer.tell()
        try:
            self._writer.write(b"".join(frame(p) for p in payloads))
            self._writer.flush()
            if self.fsync:
                os.fsync(self._writer.fileno())
        except BaseException:
            self._cut_back(before)
            raise
        self._next_offset += len(payloads)
        return self._next_offset

    def _cut_back(self, size: int) -> None:
        """Drop a partly written batch (its buffered bytes too): the file ends at the last whole record."""
        assert self._writer is not None
        path = Path(self._writer.name)
        with contextlib.suppress(OSError):  # the buffered bytes that could not be flushed are what we drop
            self._writer.close()
        with path.open("r+b") as handle:
            handle.truncate(size)
        self._writer = path.open("ab")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ---- reading -----------------------------------------------------------------------------
    def _segment_holding(self, offset: int, segments: list[tuple[int, Path]]) -> int:
        """Index of the segment that holds (or would hold) `offset`."""
        index = 0
        for i, (first, _) in enumerate(segments):
            if first <= offset:
                index = i
        return index

    def read(self, from_offset: int, max_records: int = 10_000) -> list[tuple[int, bytes]]:
        """Up to `max_records` (offset, payload) pairs starting at `from_offset`."""
        out: list[tuple[int, bytes]] = []
        segments = self._segments()
        if not segments:
            return out
        if from_offset < segments[0][0]:
            raise ValueError(f"offset {from_offset} was deleted by retention (the log starts at {segments[0][0]})")
        held = segments[self._segment_holding(from_offset, segments):]
        for index, (first, path) in enumerate(held):
            offset, position = self._positions.get(first, (first, 0))
            if offset > from_offset:  # an older position than cached: scan this segment from its start
                offset, position = first, 0
            rotated = index + 1 < len(held)  # complete: nothing more will be appended to it
            with path.open("rb") as handle:
                handle.seek(position)
                buffer = b""
                while len(out) < max_records:
                    chunk = handle.read(READ_CHUNK)
                    at_end = not chunk
                    buffer += chunk
                    consumed = 0
                    for end, payload in _scan(buffer, final=at_end and rotated):
                        if payload is None:
                            self.corrupt_records += 1
                            logger.error("sample log %s: skipped the corrupt record at offset %d", path, offset)
                        elif offset >= from_offset:
                            out.append((offset, payload))
                        offset, consumed = offset + 1, end
                        if len(out) >= max_records:
                            break
                    buffer = buffer[consumed:]
                    position += consumed
                    if at_end:
                        break
            self._positions[first] = (offset, position)
            if len(out) >= max_records:
                break
        return out

    def end_offset(self) -> int:
        """The offset the next record will get (readers: how far the log goes now)."""
        segments = self._segments()
        if not segments:
            return 0
        first, _ = segments[-1]
        offset, _ = self._positions.get(first, (first, 0))
        while batch := self.read(offset, 100_000):
            offset = batch[-1][0] + 1
        return offset

    # ---- consumer offsets and retention --------------------------------------------------------
    def _offset_path(self, consumer: str) -> Path:
        if not consumer.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"consumer name must be alphanumeric (with - or _), got {consumer!r}")
        return self.directory / "consumers" / f"{consumer}.offset"

    def committed(self, consumer: str) -> int:
        path = self._offset_path(consumer)
        return int(path.read_text()) if path.exists() else 0

    def commit(self, consumer: str, next_offset: int) -> None:
        atomic_write_text(self._offset_path(consumer), str(next_offset))

    def consumers(self) -> dict[str, int]:
        return {path.stem: int(path.read_text()) for path in (self.directory / "consumers").glob("*.offset")}

    def retain(self) -> int:
        """Delete segments every registered consumer has committed past (keeping the newest
        `min_segments`); returns the bytes freed."""
        committed = self.consumers()
        if not committed:
            return 0
        floor = min(committed.values())
        segments = self._segments()
        freed = 0
        for (_, path), (next_first, _) in zip(segments[: -self.min_segments], segments[1:], strict=False):
            if next_first > floor:  # this segment still holds a record some consumer has not committed
                break
            freed += path.stat().st_size
            path.unlink()
            logger.info("sample log retention: deleted %s (all consumers are past offset %d)", path.name, floor)
        return freed
