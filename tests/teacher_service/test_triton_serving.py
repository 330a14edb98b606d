"""The teacher behind a real Triton server, called from a separate tritonclient gRPC client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import psutil
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from recdistill.core.contracts.teacher import TeacherTensorSpec, infer_inputs, triton_model_config
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.synthetic import synthetic_requests
from recdistill.core.features.encoder import Encoder
from teacher_service.checkpoint import load_checkpoint
from teacher_service.client import score
from teacher_service.inference import BadTeacherInput, TeacherInference
from teacher_service.launcher import teacher_process
from teacher_service.train import TeacherTrainConfig, train_teacher
from tests.conftest import RunningTriton

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
# Triton and in-process run the same float32 graph; batching and padding may reorder sums.
TOLERANCE = 1e-5


def _in_process(checkpoint: Path, tensors: dict[str, np.ndarray]) -> np.ndarray:
    model, _, _ = load_checkpoint(checkpoint)
    with torch.inference_mode():
        return model(**{k: torch.from_numpy(v) for k, v in tensors.items()}).numpy()


def _slate_tensors(dataset: PreparedDataset, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    encoder = Encoder(dataset.schema, "teacher")
    events = np.random.default_rng(seed).choice(dataset.split("test", "slate"), count, replace=False)
    tensors, _ = encoder.assemble(dataset.contexts(encoder, events, "slate"))
    return tensors


def test_metadata_exposes_only_inputs_and_the_probability(triton_teacher: RunningTriton,
                                                          ml100k: PreparedDataset) -> None:
    with grpcclient.InferenceServerClient(triton_teacher.grpc_url) as client:
        metadata = client.get_model_metadata("teacher", as_json=True)
    assert [i["name"] for i in metadata["inputs"]] == list(Encoder(ml100k.schema, "teacher").input_names)
    assert [o["name"] for o in metadata["outputs"]] == ["probability"]
    # What Triton serves is the tensor spec the contract declares (batch dimension first).
    spec = TeacherTensorSpec.from_schema(ml100k.schema)
    served = {i["name"]: (i["datatype"], [int(d) for d in i["shape"]]) for i in metadata["inputs"]}
    assert served == {s.name: (s.dtype, [-1, *s.dims]) for s in spec.inputs}


def test_the_deploy_model_config_is_generated_from_the_tensor_spec(ml100k: PreparedDataset) -> None:
    """deploy/triton/teacher/config.pbtxt is `recdistill teacher triton-config` output, kept current."""
    deployed = (Path(__file__).parents[2] / "deploy" / "triton" / "teacher" / "config.pbtxt").read_text()
    assert deployed == triton_model_config(TeacherTensorSpec.from_schema(ml100k.schema), instance_kind="KIND_GPU"), \
        "regenerate it: recdistill teacher triton-config --schema data/ml-100k/features.json " \
        "--out deploy/triton/teacher/config.pbtxt"


def test_scores_match_the_model_in_process(triton_teacher: RunningTriton, ml100k: PreparedDataset,
                                           tiny_teacher: Path) -> None:
    tensors = _slate_tensors(ml100k, 16)
    served = score(triton_teacher.grpc_url, tensors)
    assert served.shape == (16, 21)
    assert served.dtype == np.float32
    assert np.all((served >= 0) & (served <= 1))
    np.testing.assert_allclose(served, _in_process(tiny_teacher, tensors), atol=TOLERANCE, rtol=0)


def test_concurrent_clients_all_get_their_own_scores(triton_teacher: RunningTriton, ml100k: PreparedDataset,
                                                     tiny_teacher: Path) -> None:
    batches = [_slate_tensors(ml100k, 4, seed) for seed in range(24)]
    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(lambda t: score(triton_teacher.grpc_url, t), batches))
    for tensors, result in zip(batches, served, strict=True):
        np.testing.assert_allclose(result, _in_process(tiny_teacher, tensors), atol=TOLERANCE, rtol=0)


def test_a_20000_event_history_is_scored(triton_teacher: RunningTriton, ml100k: PreparedDataset,
                                         tiny_teacher: Path) -> None:
    (body,) = synthetic_requests(ml100k.schema, 1, history_len=20_000, candidates=100, seed=11)
    tensors, _ = Encoder(ml100k.schema, "teacher").encode_requests([ml100k.schema.parse_request(orjson.dumps(body))])
    served = score(triton_teacher.grpc_url, tensors)
    assert served.shape == (1, 100)
    np.testing.assert_allclose(served, _in_process(tiny_teacher, tensors), atol=TOLERANCE, rtol=0)


def _bad(tensors: dict[str, np.ndarray], name: str, value: np.ndarray) -> dict[str, np.ndarray]:
    return tensors | {name: value}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong_dtype", "data-type"),
        ("wrong_rank", "shape"),
        ("mismatched_history", "share one length"),
        ("too_many_candidates", "candidates"),
        ("history_too_long", "exceeds the limit"),
        ("id_out_of_range", "outside"),
    ],
)
def test_bad_input_is_refused_and_the_server_keeps_serving(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, case: str, expected: str
) -> None:
    good = _slate_tensors(ml100k, 2)
    width = good["cand_multi"].shape[2]
    bad = {
        "wrong_dtype": lambda: _bad(good, "hist_item", good["hist_item"].astype(np.float32)),
        "wrong_rank": lambda: _bad(good, "user_cat", good["user_cat"][:, :, None]),
        "mismatched_history": lambda: _bad(good, "hist_action", good["hist_action"][:, :-1]),
        "too_many_candidates": lambda: {
            **good, "cand_item": np.ones((2, 1_001), np.int64), "cand_num": np.zeros((2, 1_001, 1), np.float32),
            "cand_multi": np.zeros((2, 1_001, width), np.float32)},
        "history_too_long": lambda: {
            **good, "hist_item": np.ones((2, 20_001), np.int64), "hist_action": np.zeros((2, 20_001), np.int64),
            "hist_recency": np.zeros((2, 20_001), np.float32)},
        "id_out_of_range": lambda: _bad(good, "cand_item", good["cand_item"] + 10**6),
    }[case]()
    with pytest.raises(InferenceServerException, match=expected):
        score(triton_teacher.grpc_url, bad)
    assert score(triton_teacher.grpc_url, good).shape == (2, 21)


def test_score_command_prints_one_score_per_candidate(triton_teacher: RunningTriton, ml100k: PreparedDataset) -> None:
    command = [str(Path(sys.executable).parent / "recdistill"), "teacher", "score", "--url", triton_teacher.grpc_url,
               "--request", str(ROOT / "examples" / "rank_request.movielens-100k.json"),
               "--schema", str(ml100k.directory / "features.json")]
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    scores = json.loads(result.stdout)["scores"]
    request = json.loads((ROOT / "examples" / "rank_request.movielens-100k.json").read_text())
    assert [s["item_id"] for s in scores] == [str(c["item_id"]) for c in request["candidates"]]
    assert all(0.0 <= s["score"] <= 1.0 for s in scores)


def test_metrics_endpoint_counts_inferences(triton_teacher: RunningTriton, ml100k: PreparedDataset) -> None:
    import httpx

    score(triton_teacher.grpc_url, _slate_tensors(ml100k, 1))
    text = httpx.get(f"http://{triton_teacher.metrics_url}/metrics", timeout=10).text
    assert 'nv_inference_request_success{model="teacher"' in text


def test_infer_inputs_follow_the_encoder_order(ml100k: PreparedDataset) -> None:
    tensors = _slate_tensors(ml100k, 1)
    assert [i.name() for i in infer_inputs(tensors, grpcclient)] == list(Encoder(ml100k.schema, "teacher").input_names)


def test_a_short_history_teacher_reads_only_its_window_through_triton(ml100k: PreparedDataset,
                                                                      tmp_path: Path) -> None:
    """The short-history control: trained on the student's 10 events, served by Triton like any teacher;
    a client that sends only those 10 events gets the same scores as one that sends the whole history."""
    checkpoint = tmp_path / "short"
    manifest = train_teacher(ml100k.directory, checkpoint, TeacherTrainConfig(
        task="slate", size="tiny", epochs=1, max_train_events=2_000, train_negatives=4, history_limit=10))
    assert manifest.history_limit == 10
    assert "-short-" in manifest.teacher_version
    events = ml100k.split("test", "slate")[-8:]  # long histories: late in the timeline
    full, cut = Encoder(ml100k.schema, "teacher"), Encoder(ml100k.schema, "teacher", history_len=10)
    whole, _ = full.assemble(ml100k.contexts(full, events, "slate"))
    window, _ = cut.assemble(ml100k.contexts(cut, events, "slate"))
    assert whole["hist_item"].shape[1] > 10 == window["hist_item"].shape[1]
    with teacher_process(checkpoint, log_path=tmp_path / "triton.log") as (endpoints, _):
        served_whole, served_window = score(endpoints.grpc_url, whole), score(endpoints.grpc_url, window)
    np.testing.assert_allclose(served_whole, served_window, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(served_window, _in_process(checkpoint, window), atol=TOLERANCE, rtol=0)


def test_a_refused_request_does_not_fail_the_others_of_its_batch(tiny_teacher: Path,
                                                                 ml100k: PreparedDataset) -> None:
    """What the Python-backend model does with one dynamic batch: the valid requests are padded together and
    scored as if alone; the invalid one gets its own reason."""
    model, schema, _ = load_checkpoint(tiny_teacher)
    inference = TeacherInference(model, schema, max_candidates=1_000, max_history=20_000)
    short, long = _slate_tensors(ml100k, 2, seed=1), _slate_tensors(ml100k, 3, seed=2)
    bad = {**short, "cand_item": short["cand_item"] + 10**6}
    first, refused, second = inference.score_requests([short, bad, long])
    assert isinstance(refused, BadTeacherInput)
    assert "outside" in str(refused)
    np.testing.assert_allclose(first, _in_process(tiny_teacher, short), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(second, _in_process(tiny_teacher, long), atol=TOLERANCE, rtol=0)


def test_triton_stops_with_teacher_serve_even_on_kill_9(tiny_teacher: Path, tmp_path: Path) -> None:
    with teacher_process(tiny_teacher, log_path=tmp_path / "triton.log") as (_, process):
        children = psutil.Process(process.pid).children(recursive=True)
        assert any(child.name() == "tritonserver" for child in children)
        process.kill()
        process.wait()
        _, alive = psutil.wait_procs(children, timeout=60)
    assert not alive, f"left running after kill -9 of teacher serve: {[p.name() for p in alive]}"


@pytest.mark.parametrize(("what", "expected"), [("not-a-checkpoint", "not a teacher checkpoint"),
                                                 ("cuda", "no CUDA device")])
def test_serve_refuses_before_starting_triton(tiny_teacher: Path, tmp_path: Path, what: str, expected: str) -> None:
    checkpoint = tmp_path if what == "not-a-checkpoint" else tiny_teacher
    result = subprocess.run([str(Path(sys.executable).parent / "recdistill"), "teacher", "serve", "--checkpoint",
                             str(checkpoint)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TEACHER_DEVICE": what if what == "cuda" else "auto"})
    assert result.returncode == 2, result.stderr
    assert expected in " ".join(result.stdout.split())
