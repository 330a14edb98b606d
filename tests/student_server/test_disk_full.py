"""Disk full during appends, for real: the server runs with a file-size limit (RLIMIT_FSIZE), so its
sample-log segment cannot grow past it. Acknowledged feedback stays readable, refused feedback is told to
retry (503, never 500), the server keeps ranking, and after a restart with room again the log goes on."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import signal
import struct
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from recdistill.core.contracts.records import FeedbackRecord, SampledRequest, decode_record
from recdistill.core.errors import OverloadedError
from recdistill.core.processes import free_port
from recdistill.core.samplelog import SampleLog
from recdistill.core.samplelog.file import frame
from student_server.sampling import TrafficSampler
from tests.student_server.conftest import sampled_records, wait_ready

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).parents[2] / "examples" / "rank_request.movielens-100k.json"
LIMIT = 16 * 1024


def _start(registry: Path, samples: Path, port: int, file_limit: int | None) -> subprocess.Popen:
    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    command = [str(Path(sys.executable).parent / "recdistill"), "student", "serve", "--registry", str(registry),
               "--port", str(port), "--grpc-port", str(free_port()), "--sample-log", str(samples),
               "--server-id", "full"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy(),
                            preexec_fn=limit_files if file_limit else None)  # noqa: PLW1509 - a test's child


def test_a_full_disk_refuses_feedback_with_503_and_loses_nothing_acknowledged(registry: Path, tmp_path: Path) -> None:
    samples, port = tmp_path / "samples", free_port()
    url = f"http://127.0.0.1:{port}"
    # The registry's ONNX files are read, not written: the limit only bites the sample log.
    server = _start(registry, samples, port, LIMIT)
    acknowledged, refused = [], []
    pad = "x" * 120  # ~200 bytes a record: the limit is reached after ~80 records
    try:
        wait_ready(url, server)
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(150):
                response = client.post("/v1/feedback", json={"request_id": f"r{i}-{pad}"[:128], "item_id": str(i),
                                                             "label": 1})
                assert response.status_code in (202, 503), response.text
                (acknowledged if response.status_code == 202 else refused).append(str(i))
                if response.status_code == 503:
                    assert int(response.headers["retry-after"]) >= 1
            assert client.post("/v1/rank", content=EXAMPLE.read_bytes()).status_code == 200, "ranking goes on"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert acknowledged
    assert refused, "the limit was reached"
    segment_bytes = sum(p.stat().st_size for p in (samples / "full-0").glob("segment-*.log"))
    assert segment_bytes <= LIMIT
    stored = [r.item_id for r in sampled_records(samples, "full-0") if isinstance(r, FeedbackRecord)]
    assert stored == acknowledged, "exactly the acknowledged records, in order: written = read"

    restarted = _start(registry, samples, port, None)  # room again
    try:
        wait_ready(url, restarted)
        response = httpx.post(f"{url}/v1/feedback", json={"request_id": "r", "item_id": "after", "label": 0})
        assert response.status_code == 202
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=30)
    stored = [r.item_id for r in sampled_records(samples, "full-0") if isinstance(r, FeedbackRecord)]
    assert stored == [*acknowledged, "after"]


class _Quota(SampleLog):
    """A real segment log on a disk with `free` bytes of room: an append that does not fit fails whole
    with ENOSPC (as a full disk does; the log cuts a partly written batch back itself)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, fsync=False)
        self.free = 0

    def append(self, payloads: list[bytes]) -> int:
        size = sum(len(frame(p)) for p in payloads)
        if size > self.free:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.free -= size
        return super().append(payloads)


async def test_feedback_is_taken_again_as_soon_as_the_disk_has_room(tmp_path: Path) -> None:
    """While the disk is full, 2,000 sampled requests (~0.5 MB) wait in the buffer. Room for 100 KB comes
    back, less than they need: feedback used to be appended behind the whole buffer, all or nothing, and
    stayed refused (40 of 40 answered 503 over 20 s). Now it is written on its own, at once; the buffer
    drains in chunks as far as the room allows, and all of it once there is room; the counts add up."""
    log = _Quota(tmp_path / "samples")
    sampler = TrafficSampler(log, rate=1.0, capacity=10_000, buffer=5_000, retry_s=0.05)
    requests = [_request(i) for i in range(2_000)]
    acknowledged = []
    try:
        for record in requests:
            assert sampler.offer(record)
        with pytest.raises(OverloadedError):
            await sampler.write_durably(_feedback("while-full"))
        assert sampler.buffered == len(requests)
        log.free = 100_000  # some room again
        await asyncio.wait_for(sampler.write_durably(_feedback("first")), timeout=5)
        acknowledged.append("first")
        for i in range(40):
            with contextlib.suppress(OverloadedError):  # the room may be used up meanwhile: refused, not lost
                await asyncio.wait_for(sampler.write_durably(_feedback(f"f{i}")), timeout=5)
                acknowledged.append(f"f{i}")
        assert 0 < sampler.buffered < len(requests), "the buffer drained as far as the room allowed"
        log.free = 10_000_000  # plenty
        await asyncio.wait_for(sampler.write_durably(_feedback("last")), timeout=5)
        acknowledged.append("last")
        assert sampler.buffered == 0
    finally:
        sampler.close()
    stored = [decode_record(p) for _, p in SampleLog(tmp_path / "samples").read(0, 1 << 20)]
    assert [r.item_id for r in stored if isinstance(r, FeedbackRecord)] == acknowledged, \
        "every acknowledged feedback is in the log, and none that was refused"
    written = [r.request_id for r in stored if isinstance(r, SampledRequest)]
    assert written == [r.request_id for r in requests], "every buffered request, oldest first, none twice"


def _request(i: int) -> SampledRequest:
    return SampledRequest(request_id=f"r{i}", ts=1.0, request_ts=1.0, model_version="v1", sampling_probability=1.0,
                          request=b'{"candidates": [{"item_id": 1}, {"item_id": 2}]}',
                          scores=struct.pack("<2f", 0.5, 0.25), positions=struct.pack("<2i", 0, 1))


def _feedback(item: str) -> FeedbackRecord:
    return FeedbackRecord(request_id="r0", item_id=item, label=1.0, ts=1.0, received_ts=1.0)


class _Counting(SampleLog):
    """The real file log, counting its appends."""

    appends = 0

    def append(self, payloads: list[bytes]) -> int:
        type(self).appends += 1
        return super().append(payloads)


async def test_sampled_requests_gather_for_a_tick_and_feedback_does_not_wait(tmp_path: Path) -> None:
    """200 requests sampled a millisecond apart go out in a write or two, not one write each; feedback queued
    behind a long tick is written at once; closing writes what is still queued without waiting for the tick."""
    log = _Counting(tmp_path / "samples")
    sampler = TrafficSampler(log, rate=1.0, capacity=10_000, tick_s=1.0)
    try:
        for i in range(200):
            assert sampler.offer(_request(i))
            await asyncio.sleep(0.001)
        await asyncio.wait_for(sampler.write_durably(_feedback("now")), timeout=0.9)
        assert _Counting.appends <= 3, f"{_Counting.appends} appends for 200 sampled requests and one feedback"
        for i in range(200, 300):
            assert sampler.offer(_request(i))
    finally:
        closing = asyncio.get_running_loop().time()
        sampler.close()
        closed_in = asyncio.get_running_loop().time() - closing
    stored = [decode_record(p) for _, p in SampleLog(tmp_path / "samples").read(0, 1 << 20)]
    assert sorted(r.request_id for r in stored if isinstance(r, SampledRequest)) == sorted(
        _request(i).request_id for i in range(300))
    assert [r.item_id for r in stored if isinstance(r, FeedbackRecord)] == ["now"]
    assert closed_in < 5
