"""One short check for a machine with a GPU (`python -m benchmarks.gpu_check`, a few minutes): the sequence
teacher's training throughput on the CPU and on CUDA at the same batch, its labelling throughput through
Triton against the same model in-process, and its latency on one 20,000-event history. Writes the figures
as JSON (`--out`); without CUDA it measures the CPU side and says so.

The data is the seeded synthetic e-commerce log (no download); throughput does not depend on its content.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.prepare import prepare_source
from recdistill.core.data.sources import shipped_schema
from recdistill.core.data.synthetic import synthetic_requests
from recdistill.core.features.encoder import Encoder
from teacher_service import SEQUENCE_SIZES, SequenceTeacher, train_step, training_windows, window_batch


def training_throughput(dataset: PreparedDataset, size: str, device: torch.device, batch: int,
                        seconds: float) -> dict[str, Any]:
    """Tokens a second of training steps (forward, backward, Adam) for about `seconds`."""
    torch.manual_seed(0)
    model = SequenceTeacher(dataset.schema, SEQUENCE_SIZES[size]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    encoder = Encoder(dataset.schema, "teacher")
    windows = training_windows(dataset, encoder, float("inf"), model.config.train_len)
    rng = np.random.default_rng(0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    tokens, steps, started = 0, 0, None
    while started is None or time.perf_counter() - started < seconds:
        chosen = [windows[i] for i in rng.integers(len(windows), size=batch)]
        shared = rng.integers(2, model.embed.item.num_embeddings, model.config.negatives)
        data = window_batch(chosen, device, shared, model.config.own_negatives)
        train_step(model, optimizer, data, torch.from_numpy(shared).to(device), autocast)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if started is None:  # the first step warms up
            started = time.perf_counter()
            continue
        tokens += int(data["lengths"].sum())
        steps += 1
    elapsed = time.perf_counter() - started
    return {"device": str(device), "size": size, "parameters": sum(p.numel() for p in model.parameters()),
            "batch_windows": batch, "steps": steps, "tokens_per_s": round(tokens / elapsed, 1)}


def labelling(checkpoint: Path, dataset: PreparedDataset, requests: int, clients: int) -> dict[str, Any]:
    """Candidates a second scored through Triton (`clients` concurrent gRPC clients) and in-process."""
    from teacher_service import load_checkpoint, score, teacher_process

    encoder = Encoder(dataset.schema, "teacher")
    bodies = synthetic_requests(dataset.schema, requests, history_len=100, candidates=100, seed=1)
    tensors = [encoder.encode_requests([dataset.schema.parse_request(b)])[0] for b in bodies]
    model, _, _ = load_checkpoint(checkpoint)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    started = time.perf_counter()
    with torch.inference_mode():
        for t in tensors:
            model(**{k: torch.from_numpy(v).to(device) for k, v in t.items()}).cpu()
    in_process = requests * 100 / (time.perf_counter() - started)
    long_body = synthetic_requests(dataset.schema, 1, history_len=20_000, candidates=100, seed=2)[0]
    long_tensors = encoder.encode_requests([dataset.schema.parse_request(long_body)])[0]
    with torch.inference_mode():
        model(**{k: torch.from_numpy(v).to(device) for k, v in long_tensors.items()})
        started = time.perf_counter()
        model(**{k: torch.from_numpy(v).to(device) for k, v in long_tensors.items()}).cpu()
        long_in_process_ms = (time.perf_counter() - started) * 1e3
    with teacher_process(checkpoint) as (endpoints, _):
        score(endpoints.grpc_url, tensors[0])  # warm
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda t: score(endpoints.grpc_url, t), tensors))
        via_triton = requests * 100 / (time.perf_counter() - started)
        score(endpoints.grpc_url, long_tensors)
        started = time.perf_counter()
        score(endpoints.grpc_url, long_tensors)
        long_triton_ms = (time.perf_counter() - started) * 1e3
    return {"in_process_candidates_per_s": round(in_process), "triton_candidates_per_s": round(via_triton),
            "triton_vs_in_process": round(via_triton / in_process, 3), "clients": clients,
            "latency_20000_events_ms": {"in_process": round(long_in_process_ms, 1), "triton": round(long_triton_ms, 1)},
            "device": str(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="seq-m")
    parser.add_argument("--batch", type=int, default=16, help="windows a training step (the same on both devices)")
    parser.add_argument("--seconds", type=float, default=20.0, help="training time measured on each device")
    parser.add_argument("--requests", type=int, default=200, help="labelling requests (100 candidates each)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="recdistill-gpu-check-"))
    prepare_source("ecommerce:40000", shipped_schema("ecommerce"), work / "data")
    dataset = PreparedDataset(work / "data")
    figures: dict[str, Any] = {"cuda": torch.cuda.is_available(),
                               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                               "train": [training_throughput(dataset, args.size, torch.device("cpu"), args.batch,
                                                             args.seconds)]}
    if torch.cuda.is_available():
        figures["train"].append(training_throughput(dataset, args.size, torch.device("cuda"), args.batch,
                                                    args.seconds))
        cpu, gpu = (row["tokens_per_s"] for row in figures["train"])
        figures["train_cuda_vs_cpu"] = round(gpu / cpu, 1)
    else:
        figures["note"] = "no CUDA device here: the CPU side only"
    from teacher_service import TeacherTrainConfig, train_teacher

    checkpoint = work / "teacher"
    train_teacher(dataset.directory, checkpoint, TeacherTrainConfig(task="slate", size=args.size, epochs=1,
                                                                    max_train_events=5_000))
    figures["labelling"] = labelling(checkpoint, dataset, requests=args.requests, clients=4)
    args.out.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
