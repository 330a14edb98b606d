"""What a snapshot of the teacher knows later: the window study's teacher scores the test slates reading each
user's history (a) up to the request, (b) frozen at the user's last event of the students' training window,
with that event's clock, and (c) frozen there but with the request's clock; and (a)'s margin over the repeat
counter over the whole history (paired, users resampled, 2,000 draws).

Run after the window study (`recdistill study window --out runs/window`), from the repository root:

    .venv/bin/python docs/window/frozen_teacher.py runs/window

It prints the three test AUCs and the margin (README and docs/demo.md quote them). The window is the
study's 10 events per user.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from distill_worker import DistillConfig, GateConfig, TeacherClientSettings, WorkerSettings
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.history_value import repeat_counter_scores
from recdistill.demo.experiments import BatchExperiment
from recdistill.demo.scaling import teacher_scores
from recdistill.demo.stats import auc_difference
from recdistill.demo.window_study import study_teacher


def main(study: Path) -> None:
    dataset = PreparedDataset(study / "data")
    demo, _, _, model = study_teacher(dataset, study.parent / ".cache")  # the study's teacher, from its cache
    settings = WorkerSettings(data=dataset.directory, registry=study / "frozen" / "registry",
                              state_dir=study / "frozen" / "state", task="slate", window_events=10,
                              teacher=TeacherClientSettings(url="in-process", teacher_version="frozen"),
                              distill=DistillConfig(), gate=GateConfig(holdout_events=demo.gate_holdout_events))
    experiment = BatchExperiment(settings)
    test, events = experiment.test, dataset.events

    def scores() -> np.ndarray:
        return teacher_scores(model, dataset, test, None, None, torch.device("cpu"))

    def auc() -> float:
        return experiment.metrics(scores())["auc"]

    now = scores()
    counter = repeat_counter_scores(dataset, test.event_ids, test.labels.shape[1])
    margin = auc_difference(test.labels, test.labels >= 0, test.user_ids, [now], [counter], 2_000)
    sys.stdout.write(f"teacher reading up to the request: {experiment.metrics(now)['auc']:.4f}; repeat counter "
                     f"{experiment.metrics(counter)['auc']:.4f}; the teacher's margin {margin['difference']:+.4f} "
                     f"[{margin['low']:+.4f}, {margin['high']:+.4f}]\n")
    users, times = events["user_id"].to_numpy(), events["timestamp"].to_numpy()
    last: dict[str, int] = {}
    for event in np.asarray(experiment.data.train.event_ids):
        if users[event] not in last or times[event] > times[last[users[event]]]:
            last[users[event]] = int(event)
    lengths, clock = events["hist_len"].to_numpy().copy(), times.copy()
    for event in np.asarray(test.event_ids):
        if users[event] in last:  # a user without a training event reads up to the request
            lengths[event], clock[event] = lengths[last[users[event]]], times[last[users[event]]]
    original = events[["hist_len", "timestamp"]].copy()
    events["hist_len"], events["timestamp"] = lengths, clock
    sys.stdout.write(f"frozen at the training window's end (its history and clock): {auc():.4f}\n")
    events["timestamp"] = original["timestamp"].to_numpy()
    sys.stdout.write(f"frozen history, the request's clock: {auc():.4f}\n")
    events["hist_len"] = original["hist_len"].to_numpy()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/window"))
