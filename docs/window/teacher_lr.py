"""Does a cosine learning-rate decay lift the sequence teacher's margin over the repeat counter?

The demo's teacher on Instacart as `from_data` chooses it (`seq-xs`, 12 epochs, lr 5e-3, 512 windows a batch...
as `TeacherTrainConfig` gives them, 2,000 valid events held out for the gate), seeds 0 and 1, trained twice: with
the constant learning rate it ships with, and with the rate decayed along a cosine to 0 over the 12 epochs'
steps; epochs chosen on valid (patience 3) both times. The test slates are scored once per teacher; the
seed-mean margin over the repeat counter over the whole history is paired by seed, users resampled, 2,000 draws.
The schedule is put on the training step from outside (the shipped trainer has no schedule option), so the
constant run is the shipped trainer itself. From the repository root, about 13 minutes here:

    .venv/bin/python docs/window/teacher_lr.py runs/teacher-lr
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

import teacher_service.families as families
import teacher_service.sequence_train as sequence_train
from recdistill.core import metrics
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.history_value import repeat_counter_scores
from recdistill.core.data.prepare import prepare_source
from recdistill.core.data.sources import shipped_schema
from recdistill.core.features.encoder import Encoder
from recdistill.core.training import EncodedSplit, predict
from recdistill.demo.stats import auc_difference
from teacher_service.checkpoint import load_checkpoint
from teacher_service.train import TeacherTrainConfig, train_teacher

SHIPPED_FIT, SHIPPED_STEP = sequence_train.fit_sequence, sequence_train.train_step


class Cosine:
    """The learning rate of each step along a cosine from the configured rate to 0 over every epoch's steps."""

    def __init__(self) -> None:
        self.on, self.step, self.total, self.lr = False, 0, 1, 0.0

    def fit(self, model, windows, valid, **kwargs):  # noqa: ANN001, ANN201 - fit_sequence's own signature
        self.step, self.lr = 0, kwargs["lr"]
        self.total = kwargs["epochs"] * math.ceil(len(windows) / kwargs["batch_size"])
        return SHIPPED_FIT(model, windows, valid, **kwargs)

    def train_step(self, model, optimizer, batch, negatives, autocast):  # noqa: ANN001, ANN201
        if self.on:
            for group in optimizer.param_groups:
                group["lr"] = self.lr * 0.5 * (1 + math.cos(math.pi * self.step / self.total))
        self.step += 1
        return SHIPPED_STEP(model, optimizer, batch, negatives, autocast)


def main(out: Path) -> None:
    data = out / "data"
    if not (data / "manifest.json").is_file():
        prepare_source("instacart", shipped_schema("instacart"), data)
    dataset = PreparedDataset(data)
    schedule = Cosine()
    families.fit_sequence, sequence_train.train_step = schedule.fit, schedule.train_step
    test = EncodedSplit.build(dataset, Encoder(dataset.schema, "teacher"), "test", "slate")
    mask = test.labels >= 0
    counter = repeat_counter_scores(dataset, np.asarray(test.event_ids), test.labels.shape[1])
    sys.stdout.write(f"repeat counter {metrics.auc(test.labels[mask], counter[mask]):.4f}\n")
    for name in ("constant", "cosine"):
        schedule.on = name == "cosine"
        runs = []
        for seed in (0, 1):
            config = TeacherTrainConfig(task="slate", size="seq-xs", epochs=12, batch_size=512, lr=5e-3, seed=seed,
                                        holdout_events=2_000)
            manifest = train_teacher(data, out / f"{name}-{seed}", config, torch.device("cpu"))
            model = load_checkpoint(out / f"{name}-{seed}")[0].eval()
            with torch.no_grad():
                runs.append(predict(lambda inputs: model(**inputs), test)[0])  # noqa: B023 - used at once
            sys.stdout.write(f"{name} seed {seed}: best epoch {manifest.best_epoch}, "
                             f"valid {manifest.valid['auc']:.4f}, test {manifest.test['auc']:.4f}\n")
        d = auc_difference(test.labels, mask, test.user_ids, runs, [counter, counter], 2_000)
        sys.stdout.write(f"{name}: seed-mean margin over the counter {d['difference']:+.4f} "
                         f"[{d['low']:+.4f}, {d['high']:+.4f}]\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
