"""How much a per-user cache of teacher score curves could carry, against the same cache written by the
teacher's 10-event twin and against the repeat counter: the bound on the next channel (docs/demo.md).

The cache is written after each event of a user (a worker asking the teacher off the request path, black box:
candidates and a clock in, probabilities out) and read at the user's next request. It holds each item's score at
7 clocks after that event (1 s, 1, 2, 4, 7, 14, 30 days), interpolated in log time at the request's elapsed time.
A store written per user holds some items only: the user's own earlier items, and with them the K most bought
items of the training window; a test candidate outside it is scored the median of the cached scores (no student
fills the misses here, so this is a bound on what the cache itself carries, not a student's AUC). The cache is
`cache_student.py`'s `Cache`.

The teacher is the demo's (`seq-xs` on Instacart as `from_data` picks it, seed 0, as `docs/window/teacher_lr.py`
trains it with the shipped constant rate); its 10-event twin is trained here alike with `history_limit=10` (about
2 minutes). From the repository root, after `teacher_lr.py` (about 4 minutes more here):

    .venv/bin/python docs/window/cache_bound.py runs/teacher-lr
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from cache_student import Cache  # docs/window/cache_student.py: the script's folder is first on sys.path

from recdistill.core import metrics
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.history_value import repeat_counter_scores
from recdistill.core.features.encoder import Encoder
from recdistill.core.training import EncodedSplit
from recdistill.demo.scaling import teacher_scores
from recdistill.demo.stats import auc_difference
from teacher_service.checkpoint import load_checkpoint
from teacher_service.train import TeacherTrainConfig, train_teacher

POPULAR_HELD = (0, 200, 1_000)


def main(out: Path) -> None:
    data = out / "data"
    dataset = PreparedDataset(data)
    short = out / "short-0"
    if not (short / "manifest.json").is_file():
        train_teacher(data, short, TeacherTrainConfig(task="slate", size="seq-xs", epochs=12, batch_size=512,
                                                      lr=5e-3, seed=0, holdout_events=2_000, history_limit=10),
                      torch.device("cpu"))
    teachers = {"teacher": (load_checkpoint(out / "constant-0")[0].eval(), None),
                "10-event twin": (load_checkpoint(short)[0].eval(), 10)}
    test = EncodedSplit.build(dataset, Encoder(dataset.schema, "teacher"), "test", "slate")
    mask = test.labels >= 0

    def auc(values: np.ndarray) -> float:
        return metrics.auc(test.labels[mask], values[mask])

    def minus(values: np.ndarray, reference: np.ndarray) -> str:
        d = auc_difference(test.labels, mask, test.user_ids, [values], [reference], 2_000)
        return f"{d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"

    counter = repeat_counter_scores(dataset, np.asarray(test.event_ids), test.labels.shape[1])
    now = {name: teacher_scores(model, dataset, test, limit, None, torch.device("cpu"))
           for name, (model, limit) in teachers.items()}
    sys.stdout.write(f"at the request: teacher {auc(now['teacher']):.4f}, "
                     f"10-event twin {auc(now['10-event twin']):.4f}, repeat counter {auc(counter):.4f}; "
                     f"teacher minus counter {minus(now['teacher'], counter)}\n")

    cache = Cache(dataset, test)
    curve = {name: cache.curve(model, limit) for name, (model, limit) in teachers.items()}
    for k in POPULAR_HELD:
        held = cache.holds(k)
        cached = {name: np.where(held, values, np.median(values[held & mask])) for name, values in curve.items()}
        sys.stdout.write(
            f"cache of the user's earlier items + the {k} most bought ({held[:, 0].mean():.0%} of the real items, "
            f"{held[:, 1:][test.labels[:, 1:] == 0].mean():.0%} of the negatives): written by the teacher "
            f"{auc(cached['teacher']):.4f}, by the 10-event twin {auc(cached['10-event twin']):.4f}; teacher's "
            f"minus the counter {minus(cached['teacher'], counter)}, minus the twin's "
            f"{minus(cached['teacher'], cached['10-event twin'])}\n")

if __name__ == "__main__":
    main(Path(sys.argv[1]))
