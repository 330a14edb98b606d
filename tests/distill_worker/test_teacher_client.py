"""The worker's teacher client and soft-label store against a real Triton teacher."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from distill_worker.breaker import CircuitOpenError
from distill_worker.labels import LabelRequest, LabelStore
from distill_worker.settings import TeacherClientSettings
from distill_worker.teacher_client import TeacherClient, TeacherError
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.features.encoder import Encoder, MappedContext
from recdistill.core.processes import free_port
from teacher_service.checkpoint import load_checkpoint
from teacher_service.launcher import teacher_process
from tests.conftest import RunningTriton

pytestmark = pytest.mark.integration


def _contexts(dataset: PreparedDataset, count: int) -> tuple[Encoder, list[int], list[MappedContext]]:
    encoder = Encoder(dataset.schema, "teacher")
    events = dataset.split("test")[:count].tolist()
    return encoder, events, dataset.contexts(encoder, events, "slate", negatives=5)


def _in_process(checkpoint: Path, encoder: Encoder, contexts: list[MappedContext]) -> np.ndarray:
    model, _, _ = load_checkpoint(checkpoint)
    tensors, _ = encoder.assemble(contexts)
    with torch.inference_mode():
        return model(**{k: torch.from_numpy(v) for k, v in tensors.items()}).numpy()


async def test_concurrent_calls_are_batched_and_exact(triton_teacher: RunningTriton, tiny_teacher: Path,
                                                      ml100k: PreparedDataset) -> None:
    encoder, _, contexts = _contexts(ml100k, 40)
    client = TeacherClient(TeacherClientSettings(url=triton_teacher.grpc_url, max_batch_rows=16), encoder)
    try:
        scores = await asyncio.gather(*(client.score(c) for c in contexts))
    finally:
        await client.close()
    assert client.requests_sent <= 4
    np.testing.assert_allclose(np.stack(scores), _in_process(tiny_teacher, encoder, contexts), atol=1e-5, rtol=0)


async def test_teacher_down_then_up_loses_nothing(tiny_teacher: Path, ml100k: PreparedDataset,
                                                  tmp_path: Path) -> None:
    encoder, _, contexts = _contexts(ml100k, 10)
    port = free_port()
    settings = TeacherClientSettings(url=f"127.0.0.1:{port}", retries=60, backoff_base_s=0.1, backoff_max_s=1.0,
                                     breaker_failures=1_000, max_batch_rows=4)
    client = TeacherClient(settings, encoder)
    pending = asyncio.gather(*(client.score(c) for c in contexts))
    await asyncio.sleep(1.5)
    assert not pending.done(), "with the teacher down, calls back off and wait"
    server = teacher_process(tiny_teacher, grpc_port=port, log_path=tmp_path / "triton.log")
    await asyncio.to_thread(server.__enter__)
    try:
        scores = await asyncio.wait_for(pending, timeout=120)
    finally:
        await client.close()
        await asyncio.to_thread(server.__exit__, None, None, None)
    np.testing.assert_allclose(np.stack(scores), _in_process(tiny_teacher, encoder, contexts), atol=1e-5, rtol=0)


async def test_bad_input_is_not_retried(triton_teacher: RunningTriton, ml100k: PreparedDataset) -> None:
    encoder, _, contexts = _contexts(ml100k, 1)
    broken = replace(contexts[0], cand_item=contexts[0].cand_item + 10**6)
    client = TeacherClient(TeacherClientSettings(url=triton_teacher.grpc_url, retries=5), encoder)
    try:
        with pytest.raises(TeacherError, match="refused"):
            await client.score(broken)
    finally:
        await client.close()
    assert client.breaker.consecutive_failures == 0


async def test_the_breaker_opens_after_repeated_failures(ml100k: PreparedDataset) -> None:
    encoder, _, contexts = _contexts(ml100k, 1)
    settings = TeacherClientSettings(url=f"127.0.0.1:{free_port()}", retries=0, breaker_failures=2,
                                     breaker_reset_s=60, timeout_s=2)
    client = TeacherClient(settings, encoder)
    try:
        for _ in range(2):
            with pytest.raises(TeacherError, match="unreachable"):
                await client.score(contexts[0])
        with pytest.raises(CircuitOpenError):
            await client.score(contexts[0])
    finally:
        await client.close()
    assert client.breaker.state == "open"


async def test_label_store_is_write_once_and_survives_a_restart(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, tmp_path: Path
) -> None:
    encoder, events, contexts = _contexts(ml100k, 12)
    requests = [LabelRequest(f"event-{e}", ml100k.candidates(e, "slate", 5), c)
                for e, c in zip(events, contexts, strict=True)]
    settings = TeacherClientSettings(url=triton_teacher.grpc_url, teacher_version="t1")
    client = TeacherClient(settings, encoder)
    try:
        store = LabelStore(tmp_path / "labels.sqlite")
        first = await store.label(requests, client)
        assert (store.hits, store.misses) == (0, 12)
        sent = client.requests_sent
        store.close()
        restarted = LabelStore(tmp_path / "labels.sqlite")
        second = await restarted.label(requests, client)
        assert client.requests_sent == sent, "no label is paid for twice"
        assert restarted.hit_rate == 1.0
        assert restarted.count("t1") == 12 * 6
        np.testing.assert_array_equal(np.stack(first), np.stack(second))
        restarted.put(requests[0].example_id, requests[0].candidates, "t1", np.zeros(6))
        np.testing.assert_array_equal(restarted.get(requests[0].example_id, requests[0].candidates, "t1"), first[0])
        assert restarted.get(requests[0].example_id, requests[0].candidates, "t2") is None
        restarted.close()
    finally:
        await client.close()


def test_debiasing_pieces_do_what_they_say() -> None:
    from distill_worker.debias import Calibration, fit_calibration, inverse_propensity_weights, to_sampled_space
    from recdistill.core.metrics import ece

    rng = np.random.default_rng(0)
    truth = rng.random(20_000)
    labels = (rng.random(20_000) < truth).astype(float)
    overconfident = np.clip(truth**3, 1e-4, 1)  # a mis-calibrated teacher
    for method in ("platt", "isotonic"):
        calibration = fit_calibration(method, "t", overconfident, labels)
        assert calibration.ece_after < calibration.ece_before / 2
        assert ece(labels, calibration.transform(overconfident)) == pytest.approx(calibration.ece_after)
        # Saved as a typed struct (no pickle): what is read back calibrates the same.
        again = Calibration.from_bytes(calibration.to_bytes(), "calibration")
        np.testing.assert_array_equal(again.transform(overconfident), calibration.transform(overconfident))
    weights = inverse_propensity_weights(np.array([0.1, 0.5, 1.0]))
    assert weights.mean() == pytest.approx(1.0)
    assert weights[0] / weights[2] == pytest.approx(10.0)
    # With negatives kept at rate r the odds grow by 1 / r.
    assert to_sampled_space(np.array([0.2]), 0.25)[0] == pytest.approx(0.5)
