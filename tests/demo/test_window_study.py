"""`recdistill study window` on a small run: a row per window, each with the protocol's figures, a table and a
plot; the training window really counts events per user."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from recdistill.core.contracts.scaling import WindowReport
from recdistill.core.data.dataset import PreparedDataset
from recdistill.demo.window_study import WindowConfig, run_window_study

pytestmark = pytest.mark.e2e


def test_the_window_study_writes_a_row_per_window(ml100k: PreparedDataset, tmp_path: Path) -> None:
    config = WindowConfig(windows=(1, 3, None), seeds=1, bootstrap_samples=200, max_holdout_events=1_000,
                          teacher_size="tiny", teacher_epochs=1, student_epochs=1, max_train_events=4_000)
    report = run_window_study(ml100k, tmp_path / "window", config, tmp_path / "cache")
    assert msgspec.json.decode((tmp_path / "window" / "report.json").read_bytes(), type=WindowReport) == report
    assert [r.window_events for r in report.rows] == [1, 3, None]
    train = ml100k.split("train", "slate")
    users = np.unique(ml100k.events["user_id"].to_numpy()[train])
    sizes = [r.train_events for r in report.rows]
    assert sizes == sorted(sizes)
    assert sizes[-1] == 4_000
    assert sizes[0] == len(ml100k.recent_per_user(train, 1)) == len(users)
    for row in report.rows:
        assert row.attributable_gain_auc_ci95.low <= row.attributable_gain_auc <= row.attributable_gain_auc_ci95.high
        assert set(row.controls_auc) == {"self_distillation", "label_smoothing", "no_unexposed_labels"}
        defined = row.teacher_gain_auc_ci95.low is not None and row.teacher_gain_auc_ci95.low > 0
        assert (row.transferability is not None) == defined
    assert 0.5 <= report.repeat_counter_auc < 1.0  # MovieLens: ratings never repeat, the counter ties
    table = (tmp_path / "window" / "window.md").read_text()
    assert table.count("\n| ") == 2 + len(report.rows)
    assert (tmp_path / "window" / "transfer_by_window.png").stat().st_size > 10_000
