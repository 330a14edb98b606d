"""A student beside a per-user cache of score curves: the cache's score where it holds the candidate, the student's
own where it does not, combined by a logistic fit on valid. The cache written by the teacher, by its 10-event
twin, and the repeat counter in its place (which needs no teacher), and the teacher's cache with the counter
beside it: the next channel's controls, measured offline.

The cache is `cache_bound.py`'s (each item's score at 7 clocks after the user's previous event, interpolated in
log time at the request's elapsed time; the user's earlier items and the 1,000 most bought items of the training
window). The student is the demo's baseline (hard labels only, the 10-event window, the settings `from_data`
picks on Instacart), seeds 0 and 1; the distilled student beside it for reference. The combination is fitted on
the students' valid window (a logistic fit: a weight for each store's value where it holds the candidate, one for
that flag, one for the student's logit where no store does, and a bias), never on test; test scored once.
Intervals: seed pairs and users resampled, 2,000 draws. From the repository root, after `teacher_lr.py` and
`cache_bound.py` (about 6 minutes):

    .venv/bin/python docs/window/cache_student.py runs/teacher-lr
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from distill_worker import DistillConfig, GateConfig, TeacherClientSettings, WorkerSettings
from recdistill.core import metrics
from recdistill.core.contracts.worker import logit
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.history_value import repeat_counter_scores
from recdistill.core.training import EncodedSplit, predict
from recdistill.demo.config import FULL, from_data
from recdistill.demo.experiments import BatchExperiment
from recdistill.demo.scaling import in_process_labels, teacher_scores
from recdistill.demo.stats import auc_difference
from teacher_service.checkpoint import load_checkpoint

CURVE_CLOCKS_S = np.array([1, *(np.array([1, 2, 4, 7, 14, 30]) * 86_400)])  # 1 s, then days
POPULAR_HELD = 1_000
SEEDS = (0, 1)


class Cache:
    """Per-user score curves over a split's slates (written after each user's previous event, read at the
    request's elapsed time), and which candidates a store per user would hold."""

    def __init__(self, dataset: PreparedDataset, split: EncodedSplit) -> None:
        self.dataset, self.split = dataset, split
        events = dataset.events
        self.rows = np.asarray(split.event_ids)
        self.users, self.lengths = events["user_id"].to_numpy(), events["hist_len"].to_numpy()
        self.times = events["timestamp"].to_numpy().copy()
        by_user = np.lexsort((self.lengths, self.users))
        previous = np.full(len(events), -1)
        same_user = self.users[by_user][1:] == self.users[by_user][:-1]
        previous[by_user[1:][same_user]] = by_user[:-1][same_user]
        self.written = self.times[np.where(previous[self.rows] >= 0, previous[self.rows], self.rows)]
        elapsed = np.log(np.maximum(self.times[self.rows] - self.written, 1))
        grid = np.log(CURVE_CLOCKS_S)
        self.right = np.clip(np.searchsorted(grid, elapsed), 1, len(grid) - 1)
        self.weight = np.clip((elapsed - grid[self.right - 1]) / (grid[self.right] - grid[self.right - 1]), 0, 1)
        items = events["item_id"].to_numpy()
        self.timeline = {user: items[by_user][self.users[by_user] == user] for user in np.unique(self.users[self.rows])}

    def holds(self, popular: int = POPULAR_HELD) -> np.ndarray:
        """[events, candidates]: whether the store holds the candidate (the user's earlier items and the
        `popular` most bought of the training window)."""
        events = self.dataset.events
        items, negatives = events["item_id"].to_numpy(), events["slate_negatives"].to_numpy()
        head = {str(item) for item in self.dataset.popular_items[:popular]}
        held = np.zeros(self.split.labels.shape, dtype=bool)
        for row, event in enumerate(self.rows):
            earlier = {str(item) for item in self.timeline[self.users[event]][: self.lengths[event]]} | head
            candidates = [items[event], *negatives[event]]
            held[row, : len(candidates)] = [str(c) in earlier for c in candidates]
        return held

    def curve(self, model: torch.nn.Module, limit: int | None) -> np.ndarray:
        """The writer's scores of each slate, read from its cache at the request's elapsed time."""
        events = self.dataset.events
        curves = []
        for step in CURVE_CLOCKS_S:
            shifted = self.times.copy()
            shifted[self.rows] = self.written + step
            events["timestamp"] = shifted
            try:
                curves.append(teacher_scores(model, self.dataset, self.split, limit, None, torch.device("cpu")))
            finally:
                events["timestamp"] = self.times
        stacked, rows = np.stack(curves), np.arange(len(self.rows))
        weight = self.weight[:, None]
        return stacked[self.right - 1, rows] * (1 - weight) + stacked[self.right, rows] * weight


def features(stores: list[tuple[np.ndarray, np.ndarray]], student: np.ndarray) -> np.ndarray:
    """Each store's value where it holds the candidate and a flag for that, then the student's logit where none
    holds it."""
    columns: list[np.ndarray] = []
    for values, held in stores:
        columns += [np.where(held, values, 0.0), held.astype(np.float64)]
    anywhere = np.logical_or.reduce([held for _, held in stores])
    return np.stack([*columns, np.where(anywhere, 0.0, logit(student))], -1)


def fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A logistic fit (weights then bias) of labels `y` on features `x` [N, F]."""
    inputs, targets = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    weights = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(inputs @ weights[:-1] + weights[-1], targets)
        value.backward()
        return value

    optimizer.step(loss)
    return weights.detach().numpy()


def main(out: Path) -> None:
    dataset = PreparedDataset(out / "data")
    demo = from_data(FULL, dataset, quick=False)
    distill = DistillConfig(epochs=demo.student_epochs, patience=demo.student_patience,
                            batch_size=demo.student_batch_size, lr=demo.student_lr, kd_weight=demo.kd_weight)
    settings = WorkerSettings(data=dataset.directory, registry=out / "cache-student" / "registry",
                              state_dir=out / "cache-student" / "state", task="slate", window_events=10,
                              teacher=TeacherClientSettings(url="in-process", teacher_version="constant-0"),
                              distill=distill, gate=GateConfig(holdout_events=demo.gate_holdout_events))
    experiment = BatchExperiment(settings)
    teacher = load_checkpoint(out / "constant-0")[0].eval()
    phase, teacher_test = in_process_labels(experiment, teacher)
    experiment.phase, experiment.teacher_phases = phase, [phase]
    valid, test = experiment.data.valid, experiment.test
    twin = load_checkpoint(out / "short-0")[0].eval()  # trained by cache_bound.py

    caches = {"valid": Cache(dataset, valid), "test": Cache(dataset, test)}
    # Each store's values and where it answers, by split: the caches hold the user's earlier items and the most
    # bought ones; the counter, the items the history holds.
    stores: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {"teacher": {}, "10-event twin": {},
                                                                    "repeat counter": {}}
    for name, cache in caches.items():
        held = cache.holds()
        stores["teacher"][name] = logit(cache.curve(teacher, None)), held
        stores["10-event twin"][name] = logit(cache.curve(twin, 10)), held
        counts = np.log1p(repeat_counter_scores(dataset, cache.rows, cache.split.labels.shape[1]).astype(np.float64))
        stores["repeat counter"][name] = counts, counts > 0

    mask = test.labels >= 0
    auc = lambda values: metrics.auc(test.labels[mask], values[mask])  # noqa: E731
    students = {variant: [experiment.run(variant, seed) for seed in SEEDS] for variant in ("baseline", "distilled")}
    baseline = [run.test_scores for run in students["baseline"]]
    beside = {**{store: (store,) for store in stores}, "teacher and repeat counter": ("teacher", "repeat counter")}
    combined: dict[str, list[np.ndarray]] = {name: [] for name in beside}
    for run in students["baseline"]:
        with torch.no_grad():
            own_valid = predict(lambda inputs: run.model(**inputs), valid)[0]  # noqa: B023 - used at once
        valid_mask = valid.labels >= 0
        for name, names in beside.items():
            x = features([stores[store]["valid"] for store in names], own_valid)
            weights = fit(x[valid_mask], (valid.labels[valid_mask] > 0).astype(np.float64))
            x = features([stores[store]["test"] for store in names], run.test_scores)
            combined[name].append(x @ weights[:-1] + weights[-1])

    mean = lambda runs: float(np.mean([auc(r) for r in runs]))  # noqa: E731
    gain = mean([teacher_test]) - mean(baseline)
    sys.stdout.write(f"teacher {auc(teacher_test):.4f}; baseline student {mean(baseline):.4f}; distilled "
                     f"{mean([r.test_scores for r in students['distilled']]):.4f}; the teacher's gain {gain:.4f}\n")
    for name, runs in combined.items():
        d = auc_difference(test.labels, mask, test.user_ids, runs, baseline, 2_000)
        sys.stdout.write(f"baseline student beside the {name}'s store: {mean(runs):.4f}, minus the "
                         f"baseline {d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}], "
                         f"raw transferability {d['difference'] / gain:.2f}\n")
    for method, control in (("teacher", "10-event twin"), ("teacher", "repeat counter"),
                            ("teacher and repeat counter", "repeat counter")):
        d = auc_difference(test.labels, mask, test.user_ids, combined[method], combined[control], 2_000)
        sys.stdout.write(f"beside the {method}'s store minus beside the {control}'s: {d['difference']:+.4f} "
                         f"[{d['low']:+.4f}, {d['high']:+.4f}], attributable transferability over it "
                         f"{d['difference'] / gain:.2f} [{d['low'] / gain:.2f}, {d['high'] / gain:.2f}]\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
