"""No choice reads the test window: the teacher's size and history limit, its early stopping and the
students' search are made on the valid window, so they come out the same when the test window's slates
are scrambled (while the test AUCs, scored at the end, do change)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distill_worker.settings import DistillConfig, GateConfig, WorkerSettings
from recdistill.core.data.dataset import PreparedDataset
from recdistill.demo.experiments import BatchExperiment, TuningGrid
from recdistill.demo.teachers import choose_teacher
from teacher_service.train import TeacherTrainConfig

pytestmark = pytest.mark.e2e


def _scrambled_test(source: Path, target: Path) -> None:
    """A copy whose test events have other slates: each test event gets another one's negatives."""
    shutil.copytree(source, target)
    events = pd.read_parquet(target / "events.parquet")
    test = np.flatnonzero(events["split"].to_numpy() == "test")
    shifted = events["slate_negatives"].to_numpy()[np.roll(test, 1)]
    events.loc[test, "slate_negatives"] = pd.Series(list(shifted), index=test)
    events.to_parquet(target / "events.parquet", index=False)


def _choices(data: Path, work: Path) -> tuple[list[dict], dict, float, dict]:
    dataset = PreparedDataset(data)
    config = TeacherTrainConfig(task="slate", size="tiny", epochs=2, max_train_events=3_000, train_negatives=4,
                                holdout_events=500)
    manifest, _, selection = choose_teacher(dataset, config, ("tiny",), (None, 10), work / "cache", work / "teacher")
    settings = WorkerSettings(data=data, registry=work / "registry", state_dir=work / "state",
                              max_train_events=3_000, max_holdout_events=2_000, gate=GateConfig(holdout_events=500),
                              distill=DistillConfig(epochs=2, patience=1, batch_size=512, lr=8e-3))
    experiment = BatchExperiment(settings)
    tuning = experiment.tune("baseline", TuningGrid(weight_decay=(0.0, 1e-3)))
    kept = experiment.runs[("baseline", 0)]
    return selection, tuning.summary() | {"best_epoch": kept.best_epoch}, manifest.test["auc"], kept.test


def test_every_choice_is_the_same_when_the_test_window_changes(ml100k_dir: Path, tmp_path: Path) -> None:
    _scrambled_test(ml100k_dir, tmp_path / "scrambled")
    original = _choices(ml100k_dir, tmp_path / "a")
    scrambled = _choices(tmp_path / "scrambled", tmp_path / "b")
    assert original[0] == scrambled[0], "teacher candidates and the one chosen, on valid"
    assert sum(row["chosen"] for row in original[0]) == 1
    assert original[1] == scrambled[1], "the student's search, its choice and early stopping, on valid"
    assert original[2] != scrambled[2], "the teacher's test AUC did change: the test window was scrambled"
    assert original[3]["auc"] != scrambled[3]["auc"]
