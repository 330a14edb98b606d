"""Worker: student training throughput (examples/s) with the distillation term against labels only."""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks.results import Results, Row
from distill_worker import DistillConfig, StudentConfig, StudentModel, distill_loss
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.features.encoder import Encoder
from recdistill.core.training import EncodedSplit

SECTION = "Worker (student training, 2 threads)"
COMMAND = "make bench  # benchmarks/worker_bench.py"


def _examples_per_second(split: EncodedSplit, config: DistillConfig, seconds_budget: float) -> float:
    torch.manual_seed(0)
    model = StudentModel(split.encoder.schema, StudentConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    done, started = 0, time.perf_counter()
    for batch in split.batches(config.batch_size, shuffle=True):
        loss = distill_loss(model, batch, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done += len(batch.rows)
        if time.perf_counter() - started > seconds_budget:
            break
    return done / (time.perf_counter() - started)


def run(results: Results, dataset: PreparedDataset, quick: bool) -> None:
    torch.set_num_threads(2)
    split = EncodedSplit.build(dataset, Encoder(dataset.schema, "student"), "train", "slate", negatives=8,
                               limit=20_000 if quick else None)
    split.extras["soft_label"] = np.random.default_rng(0).random(split.labels.shape).astype(np.float32)
    budget = 5.0 if quick else 15.0
    distilled = _examples_per_second(split, DistillConfig(), budget)
    labels_only = _examples_per_second(split, DistillConfig(use_teacher=False), budget)
    results.add(Row(SECTION, "training throughput with the distillation term (9 candidates an example)",
                    distilled, "examples/s", "labels only, same model and data", labels_only,
                    note=f"{distilled * 9:,.0f} candidates/s", command=COMMAND))
