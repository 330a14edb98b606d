from __future__ import annotations

from pathlib import Path

import pytest

from recdistill.samplelog import SampleLog

pytestmark = pytest.mark.unit


def _records(start: int, count: int) -> list[dict]:
    return [{"request_id": f"r{i}", "scores": [0.5, float(i)], "position": i} for i in range(start, start + count)]


def test_append_read_and_rotate(tmp_path: Path) -> None:
    log = SampleLog(tmp_path, segment_bytes=2_000)
    for start in range(0, 300, 30):
        log.append(_records(start, 30))
    log.close()
    assert len(list(tmp_path.glob("segment-*.log"))) > 3
    reader = SampleLog(tmp_path)
    records = reader.read(0, max_records=1_000)
    assert [offset for offset, _ in records] == list(range(300))
    assert [r["request_id"] for _, r in records] == [f"r{i}" for i in range(300)]
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
    assert [r["request_id"] for _, r in records][10:] == [f"r{i}" for i in range(10, 15)]


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
