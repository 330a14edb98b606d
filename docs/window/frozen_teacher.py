"""What a snapshot of the teacher knows later, and what a per-user cache of its scores would carry.

The window study's teacher scores the test slates reading each user's history
(a) up to the request (the teacher itself), and its margin over the repeat counter over the whole history
    (paired, users resampled, 2,000 draws);
(b) frozen at the user's last event of the students' training window, with that event's clock;
(c) frozen there but with the request's clock;
(d) up to the request, with the clock of the user's previous event: a cache of the teacher's scores written
    right after each event of the user, read at the next request;
(e) the same cache holding each item's score at 7 clocks after that event (1 s, 1, 2, 4, 7, 14, 30 days),
    interpolated in log time at the request's elapsed time: a cache of score curves;
(f) (e) where the cache holds only the user's own earlier items (what a store written per user can hold),
    a candidate outside it scored the median of the cached scores.

Run after the window study (`recdistill study window --out runs/window`), from the repository root:

    .venv/bin/python docs/window/frozen_teacher.py runs/window

It prints the AUCs and the margins (README and docs/demo.md quote them); about 3 minutes here. The window is
the study's 10 events per user.
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

CURVE_CLOCKS_S = np.array([1, *(np.array([1, 2, 4, 7, 14, 30]) * 86_400)])  # 1 s, then days


def main(study: Path) -> None:
    dataset = PreparedDataset(study / "data")
    demo, _, _, model = study_teacher(dataset, study.parent / ".cache")  # the study's teacher, from its cache
    settings = WorkerSettings(data=dataset.directory, registry=study / "frozen" / "registry",
                              state_dir=study / "frozen" / "state", task="slate", window_events=10,
                              teacher=TeacherClientSettings(url="in-process", teacher_version="frozen"),
                              distill=DistillConfig(), gate=GateConfig(holdout_events=demo.gate_holdout_events))
    experiment = BatchExperiment(settings)
    test, events = experiment.test, dataset.events
    test_events = np.asarray(test.event_ids)
    users = events["user_id"].to_numpy()
    times, lengths = events["timestamp"].to_numpy().copy(), events["hist_len"].to_numpy().copy()

    def scores(hist_len: np.ndarray | None = None, clock: np.ndarray | None = None) -> np.ndarray:
        """The teacher's scores of the test slates, each test event read with `hist_len` earlier events and
        at `clock` (its own where None)."""
        if hist_len is not None:
            changed = lengths.copy()
            changed[test_events] = hist_len
            events["hist_len"] = changed
        if clock is not None:
            shifted = times.copy()
            shifted[test_events] = clock
            events["timestamp"] = shifted
        try:
            return teacher_scores(model, dataset, test, None, None, torch.device("cpu"))
        finally:
            events["hist_len"], events["timestamp"] = lengths, times

    def auc(values: np.ndarray) -> float:
        return experiment.metrics(values)["auc"]

    def margin(values: np.ndarray, reference: np.ndarray) -> str:
        d = auc_difference(test.labels, test.labels >= 0, test.user_ids, [values], [reference], 2_000)
        return f"{d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"

    now = scores()
    counter = repeat_counter_scores(dataset, test.event_ids, test.labels.shape[1])
    sys.stdout.write(f"(a) teacher reading up to the request: {auc(now):.4f}; repeat counter {auc(counter):.4f}; "
                     f"the teacher's margin {margin(now, counter)}\n")

    last: dict[str, int] = {}
    for event in np.asarray(experiment.data.train.event_ids):
        if users[event] not in last or times[event] > times[last[users[event]]]:
            last[users[event]] = int(event)
    # a user without a training event reads up to the request
    at_window_end = np.array([last.get(users[e], e) for e in test_events])
    sys.stdout.write("(b) frozen at the training window's end (its history and clock): "
                     f"{auc(scores(lengths[at_window_end], times[at_window_end])):.4f}\n")
    sys.stdout.write(f"(c) frozen history, the request's clock: {auc(scores(lengths[at_window_end])):.4f}\n")

    by_user = np.lexsort((lengths, users))
    previous = np.full(len(events), -1)
    same_user = users[by_user][1:] == users[by_user][:-1]
    previous[by_user[1:][same_user]] = by_user[:-1][same_user]
    before = np.where(previous[test_events] >= 0, previous[test_events], test_events)
    written = times[before]
    cached = scores(clock=written)
    sys.stdout.write(f"(d) a cache written after the user's previous event (its clock): {auc(cached):.4f}, "
                     f"minus the teacher {margin(cached, now)}\n")

    curves = np.stack([scores(clock=written + step) for step in CURVE_CLOCKS_S])  # [clock, event, candidate]
    elapsed = np.log(np.maximum(times[test_events] - written, 1))
    grid = np.log(CURVE_CLOCKS_S)
    right = np.clip(np.searchsorted(grid, elapsed), 1, len(grid) - 1)
    weight = np.clip((elapsed - grid[right - 1]) / (grid[right] - grid[right - 1]), 0, 1)[:, None]
    rows = np.arange(len(test_events))
    curve = curves[right - 1, rows] * (1 - weight) + curves[right, rows] * weight
    sys.stdout.write(f"(e) a cache of score curves ({len(grid)} clocks, interpolated): {auc(curve):.4f}, "
                     f"minus the teacher {margin(curve, now)}\n")

    items, negatives = events["item_id"].to_numpy(), events["slate_negatives"].to_numpy()
    timeline = {user: items[by_user][users[by_user] == user] for user in np.unique(users[test_events])}
    held = np.zeros(test.labels.shape, dtype=bool)
    for row, event in enumerate(test_events):
        earlier = set(timeline[users[event]][: lengths[event]])
        candidates = [items[event], *negatives[event]]
        held[row, : len(candidates)] = [c in earlier for c in candidates]
    own = np.where(held, curve, np.median(curve[held]))
    sys.stdout.write(f"(f) that cache holding only the user's earlier items ({held[:, 0].mean():.0%} of the real "
                     f"items, {held[:, 1:][test.labels[:, 1:] == 0].mean():.0%} of the negatives): {auc(own):.4f}, "
                     f"minus the repeat counter {margin(own, counter)}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/window"))
