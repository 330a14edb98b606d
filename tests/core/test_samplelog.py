from __future__ import annotations

import zlib
from pathlib import Path

import msgpack
import msgspec
import numpy as np
import pytest

from recdistill.core.contracts.records import (
    RECORD_FORMAT,
    FeedbackRecord,
    InvalidRecordError,
    RecordFormatError,
    SampledRequest,
    decode_record,
    encode_record,
)
from recdistill.core.samplelog import LogLocation, SampleLog, claim_partition, open_lease
from recdistill.core.samplelog.file import HEADER, HEADER_V1, MAGIC_V1, frame
from recdistill.core.samplelog.source import FileSource

pytestmark = pytest.mark.unit


def _records(start: int, count: int) -> list[bytes]:
    return [msgpack.packb({"request_id": f"r{i}", "scores": [0.5, float(i)]}) for i in range(start, start + count)]


def _ids(records: list[tuple[int, bytes]]) -> list[str]:
    return [msgpack.unpackb(payload)["request_id"] for _, payload in records]


def test_append_read_and_rotate(tmp_path: Path) -> None:
    log = SampleLog(tmp_path, segment_bytes=2_000)
    for start in range(0, 300, 30):
        log.append(_records(start, 30))
    log.close()
    assert len(list(tmp_path.glob("segment-*.log"))) > 3
    reader = SampleLog(tmp_path)
    records = reader.read(0, max_records=1_000)
    assert [offset for offset, _ in records] == list(range(300))
    assert _ids(records) == [f"r{i}" for i in range(300)]
    assert [o for o, _ in reader.read(123, max_records=5)] == [123, 124, 125, 126, 127]
    assert reader.end_offset() == 300


def test_torn_tail_is_skipped_by_readers_and_truncated_by_the_next_writer(tmp_path: Path) -> None:
    log = SampleLog(tmp_path)
    log.append(_records(0, 10))
    log.close()
    (segment,) = tmp_path.glob("segment-*.log")
    intact = segment.read_bytes()
    # A crash in the middle of the 11th record: its header and half its payload reached the disk.
    log = SampleLog(tmp_path)
    log.append(_records(10, 1))
    log.close()
    segment.write_bytes(segment.read_bytes()[: len(intact) + 12])
    assert [o for o, _ in SampleLog(tmp_path).read(0)] == list(range(10))
    writer = SampleLog(tmp_path)
    writer.append(_records(10, 5))
    writer.close()
    records = SampleLog(tmp_path).read(0)
    assert [o for o, _ in records] == list(range(15))
    assert _ids(records)[10:] == [f"r{i}" for i in range(10, 15)]


def test_a_corrupt_record_stops_the_reader_instead_of_returning_garbage(tmp_path: Path) -> None:
    log = SampleLog(tmp_path)
    log.append(_records(0, 5))
    log.close()
    (segment,) = tmp_path.glob("segment-*.log")
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF  # flip a byte of the last payload
    segment.write_bytes(bytes(data))
    assert [o for o, _ in SampleLog(tmp_path).read(0)] == [0, 1, 2, 3]


def test_consumer_offsets_are_committed_per_name(tmp_path: Path) -> None:
    log = SampleLog(tmp_path)
    log.append(_records(0, 20))
    assert log.committed("worker") == 0
    log.commit("worker", 12)
    log.commit("audit", 3)
    reopened = SampleLog(tmp_path)
    assert (reopened.committed("worker"), reopened.committed("audit")) == (12, 3)
    assert reopened.read(reopened.committed("worker"))[0][0] == 12
    with pytest.raises(ValueError, match="consumer"):
        reopened.commit("../escape", 1)


def test_a_reader_reads_only_what_is_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = SampleLog(tmp_path)
    log.append(_records(0, 1_000))
    reader = SampleLog(tmp_path)
    assert len(reader.read(0, max_records=10_000)) == 1_000
    log.append(_records(1_000, 3))
    sizes: list[int] = []
    real_read = Path.open

    def counting_open(self: Path, *args: object, **kwargs: object):  # noqa: ANN202
        handle = real_read(self, *args, **kwargs)
        original = handle.read

        def read(size: int = -1) -> bytes:
            data = original(size)
            sizes.append(len(data))
            return data

        handle.read = read
        return handle

    monkeypatch.setattr(Path, "open", counting_open)
    assert [o for o, _ in reader.read(1_000)] == [1_000, 1_001, 1_002]
    assert sum(sizes) == sum(len(frame(p)) for p in _records(1_000, 3))  # the new frames, nothing before them


def test_retention_deletes_segments_every_consumer_has_passed(tmp_path: Path) -> None:
    log = SampleLog(tmp_path, segment_bytes=2_000, min_segments=2)
    for start in range(0, 600, 30):
        log.append(_records(start, 30))
    segments = sorted(tmp_path.glob("segment-*.log"))
    size_before = sum(p.stat().st_size for p in segments)
    assert log.retain() == 0, "no consumer registered: nothing may be deleted"
    log.commit("worker", 600)
    log.commit("audit", 250)
    freed = log.retain()
    left = sorted(tmp_path.glob("segment-*.log"))
    assert freed > 0
    assert sum(p.stat().st_size for p in left) == size_before - freed
    # Every record the slowest consumer still needs is there; older ones are gone.
    assert [o for o, _ in SampleLog(tmp_path).read(250, max_records=10_000)] == list(range(250, 600))
    first_left = int(left[0].stem.split("-")[1])
    assert 0 < first_left <= 250
    with pytest.raises(ValueError, match="deleted by retention"):
        SampleLog(tmp_path).read(0)
    log.commit("audit", 600)
    log.retain()
    assert len(list(tmp_path.glob("segment-*.log"))) == 2, "the floor keeps the newest segments"


def test_a_restarted_writer_claims_its_own_partition_again(tmp_path: Path) -> None:
    first, lock = claim_partition(tmp_path, "server-a")
    second, other_lock = claim_partition(tmp_path, "server-a")  # a second live process of the same server
    assert (first, second) == ("server-a-0", "server-a-1")
    lock.close()  # the first process ends (or is killed: the OS releases its lock)
    again, lock_again = claim_partition(tmp_path, "server-a")
    assert again == "server-a-0"
    other_lock.close()
    lock_again.close()


def test_a_format_2_record_with_its_student_view_still_reads() -> None:
    scores, positions = SampledRequest.pack(np.array([0.25, 0.5], dtype="<f4"), np.array([1, 0]))
    old = msgpack.packb({"kind": "request", "format": 2, "request_id": "r1", "ts": 1.0, "request_ts": 1.0,
                         "model_version": "v1", "sampling_probability": 0.5, "student_view": "student",
                         "request": b'{"candidates": [{"item_id": 1}, {"item_id": 2}]}', "scores": scores,
                         "positions": positions, "scenario": "home"})
    record = decode_record(old)
    assert isinstance(record, SampledRequest)
    assert record.format == 2
    assert (record.request_id, record.scenario, record.request["candidates"][1]) == ("r1", "home", {"item_id": 2})
    assert not hasattr(record, "student_view")
    assert msgpack.unpackb(encode_record(msgspec.structs.replace(record, format=RECORD_FORMAT))).keys().isdisjoint(
        {"student_view"})


def test_an_unknown_record_format_is_refused_with_its_version() -> None:
    record = FeedbackRecord(request_id="r1", item_id="7", label=1.0, ts=1.0, received_ts=2.0)
    assert decode_record(encode_record(record)) == record
    future = msgpack.packb({"kind": "feedback", "format": RECORD_FORMAT + 1, "request_id": "r1"})
    with pytest.raises(RecordFormatError, match=f"format {RECORD_FORMAT + 1}.*knows formats 2, {RECORD_FORMAT}"):
        decode_record(future)
    with pytest.raises(InvalidRecordError, match="not a sample-log record"):
        decode_record(b"\x01\x02")


# Where a byte is damaged in the frame of the record at offset 5: its payload, its magic, the high bytes of
# its length field (a length a few MiB too long once looked like a frame still being written, and stalled
# the reader until that much more was appended).
DAMAGE = {"payload": (HEADER.size + 20, 0xFF), "header": (1, 0xFF), "length-byte-2": (6, 0x01),
          "length-byte-3": (7, 0x01)}


@pytest.mark.parametrize("where", list(DAMAGE))
def test_a_flipped_byte_mid_segment_loses_one_record_and_no_offset_moves(tmp_path: Path, where: str) -> None:
    log = SampleLog(tmp_path)
    payloads = _records(0, 10)
    log.append(payloads)
    log.close()
    (segment,) = tmp_path.glob("segment-*.log")
    data = bytearray(segment.read_bytes())
    fifth = sum(len(frame(p)) for p in payloads[:5])  # where the record at offset 5 starts
    at, bits = DAMAGE[where]
    data[fifth + at] ^= bits
    segment.write_bytes(bytes(data))
    reader = SampleLog(tmp_path)
    records = reader.read(0)  # the live (last) segment: more may still be appended to it
    assert [o for o, _ in records] == [0, 1, 2, 3, 4, 6, 7, 8, 9]  # the others keep their offsets
    assert _ids(records) == [f"r{i}" for i in (0, 1, 2, 3, 4, 6, 7, 8, 9)]
    assert reader.corrupt_records == 1
    # The next writer keeps every intact record (nothing truncated) and never reuses an offset; what it
    # appends is delivered at once.
    writer = SampleLog(tmp_path)
    assert writer.append(_records(10, 2)) == 12
    writer.close()
    assert [o for o, _ in reader.read(10)] == [10, 11]
    assert [o for o, _ in SampleLog(tmp_path).read(0)] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert segment.stat().st_size == len(data) + sum(len(frame(p)) for p in _records(10, 2))


def test_frames_of_the_first_format_are_still_read(tmp_path: Path) -> None:
    """Segments written before the header checksum (`RDL1` frames) stay readable, and a writer appends
    new frames after them."""
    payloads = _records(0, 3)
    old = b"".join(HEADER_V1.pack(MAGIC_V1, len(p), zlib.crc32(p)) + p for p in payloads)
    (tmp_path / "segment-00000000000000000000.log").write_bytes(old)
    writer = SampleLog(tmp_path)
    assert writer.append(_records(3, 2)) == 5
    writer.close()
    assert _ids(SampleLog(tmp_path).read(0)) == [f"r{i}" for i in range(5)]


def test_a_failed_append_leaves_no_partial_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injected: the disk fills up while a batch is made durable (fsync raises ENOSPC)."""
    log = SampleLog(tmp_path)
    log.append(_records(0, 3))
    real_fsync = __import__("os").fsync

    def full_disk(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("recdistill.core.samplelog.file.os.fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        log.append(_records(3, 5))
    monkeypatch.setattr("recdistill.core.samplelog.file.os.fsync", real_fsync)
    assert log.append(_records(8, 2)) == 5  # space is back: the next batch follows the last durable record
    log.close()
    records = SampleLog(tmp_path).read(0)
    assert [o for o, _ in records] == [0, 1, 2, 3, 4]
    assert _ids(records) == ["r0", "r1", "r2", "r8", "r9"]


def test_one_worker_holds_the_file_logs_trainer_lease_and_a_standby_takes_it_when_released(tmp_path: Path) -> None:
    """The file log's trainer lease (a flock): the second worker cannot train while the first holds it, sees who
    does, and takes it once it is released (or its process died: the kernel drops the lock)."""
    location = LogLocation.parse(tmp_path / "samples")
    active, standby = open_lease(location, "worker-a"), open_lease(location, "worker-b")
    assert active.acquire()
    assert active.acquire(), "taking one's own lease again is fine"
    assert not standby.acquire()
    assert standby.holder() == "worker-a"
    assert active.renew()
    assert not standby.renew()
    active.release()
    assert standby.acquire()
    assert standby.holder() == "worker-b"
    assert not active.renew(), "a released lease is not held"
    standby.release()
    assert FileSource(location.directory).partitions() == [], "the lease file is not a partition"
