"""Teacher labels shared through a log on the sample log's backends: the teacher (a real Triton) labels each
request once, and a second store on the same log (another scenario's trainer, a restarted one, another host)
finds every label there without calling it; bad label records are set aside with their reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill_worker.label_log import SharedLabelStore
from distill_worker.labels import LabelRequest, LabelStore
from distill_worker.settings import TeacherClientSettings
from distill_worker.teacher_client import TeacherClient, TeacherRefusedError
from recdistill.core.contracts.labels import TeacherLabels, encode_labels
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.features.encoder import Encoder
from recdistill.core.samplelog import LogLocation, open_writer
from tests.conftest import RunningTriton

pytestmark = pytest.mark.integration


def _requests(dataset: PreparedDataset, events: list[int]) -> list[LabelRequest]:
    encoder = Encoder(dataset.schema, "teacher")
    out = []
    for event in events:
        body = dataset.to_request(event, "slate", negatives=9)
        request = dataset.schema.parse_request(body)
        out.append(LabelRequest(body["request_id"], [str(c.item_id) for c in request.candidates],
                                encoder.map_request(request)))
    return out


@pytest.fixture(params=["file", "redis"])
def label_log(request: pytest.FixtureRequest, tmp_path: Path) -> LogLocation:
    if request.param == "file":
        return LogLocation.parse(tmp_path / "labels")
    valkey = request.getfixturevalue("valkey")
    return LogLocation.parse(f"{valkey.url}?stream=recdistill:labels")


async def test_a_second_trainer_finds_every_label_without_the_teacher(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, label_log: LogLocation
) -> None:
    requests = _requests(ml100k, ml100k.split("test")[:20].tolist())
    teacher = TeacherClient(TeacherClientSettings(url=triton_teacher.grpc_url, teacher_version="tiny-1"),
                            Encoder(ml100k.schema, "teacher"))
    first, second = SharedLabelStore(label_log, "host-a"), SharedLabelStore(label_log, "host-b")
    try:
        labelled = await first.label(requests, teacher)
        again = await second.label(requests, teacher)
        # A teacher that moved on labels anew: labels are keyed by its version.
        moved = TeacherClient(teacher.settings.model_copy(update={"teacher_version": "tiny-2"}), teacher.encoder)
        newer = await second.label(requests[:5], moved)
        await moved.close()
    finally:
        await teacher.close()
        first.close()
        second.close()
    assert (first.teacher_calls, first.misses, first.hits) == (20, 20, 0)
    assert (second.teacher_calls, second.hits) == (5, 20)  # the 5 are the new version's
    for mine, theirs in zip(labelled, again, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_allclose(newer[0], labelled[0], atol=1e-6)  # the same model served as "tiny-2"
    assert second.count("tiny-1") == sum(len(r.candidates) for r in requests)
    assert second.count("tiny-2") == sum(len(r.candidates) for r in requests[:5])


def test_bad_label_records_are_set_aside_with_their_reason(label_log: LogLocation) -> None:
    good = TeacherLabels.of("r1", "t1", ["a", "b"], np.array([0.25, 0.5]), 1.0)
    bad = {
        "garbage": b"\x93not a record",
        "wrong count": encode_labels(TeacherLabels.of("r2", "t1", ["a", "b", "c"], np.array([0.1, 0.2]), 1.0)),
        "not finite": encode_labels(TeacherLabels.of("r3", "t1", ["a"], np.array([float("nan")]), 1.0)),
        "out of range": encode_labels(TeacherLabels.of("r4", "t1", ["a"], np.array([1.5]), 1.0)),
    }
    writer, _, lock = open_writer(label_log, "tamperer")
    writer.append([*bad.values(), encode_labels(good), encode_labels(good)])
    writer.close()
    if lock is not None:
        lock.close()
    set_aside: list[str] = []
    store = SharedLabelStore(label_log, "reader", dead_letter=lambda payload, reason: set_aside.append(reason))
    try:
        assert store.refresh() == 6
    finally:
        store.close()
    assert (store.invalid, store.duplicates) == (4, 1)
    assert "not a label-log record" in set_aside[0]
    assert "2 probabilities for 3 candidates" in set_aside[1]
    assert all("not finite or not in [0, 1]" in reason for reason in set_aside[2:])
    np.testing.assert_array_equal(store.get("r1", ["b", "a"], "t1"), np.array([0.5, 0.25], dtype=np.float32))
    assert store.get("r2", ["a"], "t1") is None


@pytest.mark.parametrize("shared", [True, False])
async def test_a_trainer_pinned_to_a_teacher_version_reads_its_labels_and_never_asks_the_newer_teacher(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, tmp_path: Path, shared: bool
) -> None:
    requests = _requests(ml100k, ml100k.split("test")[:12].tolist())
    settings = TeacherClientSettings(url=triton_teacher.grpc_url, teacher_version="tiny-1")
    old = TeacherClient(settings, Encoder(ml100k.schema, "teacher"))
    # The teacher moved on to tiny-2; this trainer keeps training on tiny-1's labels.
    pinned = TeacherClient(settings.model_copy(update={"teacher_version": "tiny-2", "label_version": "tiny-1"}),
                           old.encoder)
    store = SharedLabelStore(LogLocation.parse(tmp_path / "labels"), "host-a") if shared \
        else LabelStore(tmp_path / "labels.sqlite")
    try:
        labelled = await store.label(requests[:8], old)
        read = await store.label(requests[:8], pinned)
        with pytest.raises(TeacherRefusedError, match=r"no label of teacher version tiny-1 .*\(4\), and the "
                                                      r"teacher serves tiny-2"):
            await store.label(requests[4:], pinned)
    finally:
        await old.close()
        await pinned.close()
        store.close()
    for mine, theirs in zip(labelled, read, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert pinned.requests_sent == 0
