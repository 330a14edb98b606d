"""`recdistill study scaling` on a small grid (2 sizes x 2 history limits, a few epochs): every cell's figures
agree with its own AUCs, the attributable reference includes the same size's 10-event teacher, the plots and
the table are written, the teachers come from the cache the second time, and bad input is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from recdistill.cli import app
from recdistill.core.contracts.figures import Interval
from recdistill.core.contracts.scaling import ScalingReport
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.errors import DataError
from recdistill.demo.scaling import SHORT, ScalingConfig, ScalingStudy, run_scaling

pytestmark = pytest.mark.e2e

SMALL = ScalingConfig(sizes=("seq-2xs", "seq-xs"), history_limits=(SHORT, None), teacher_epochs=2, seeds=1,
                      student_epochs=3, student_patience=1, max_train_events=3_000, max_holdout_events=1_500,
                      teacher_holdout_events=500, bootstrap_samples=200)


def _inside(value: float, ci: Interval) -> bool:
    return (ci.low_unbounded or ci.low is None or ci.low <= value + 1e-9) and \
        (ci.high_unbounded or ci.high is None or value - 1e-9 <= ci.high)


@pytest.fixture(scope="module")
def study(ml100k: PreparedDataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ScalingReport]:
    out = tmp_path_factory.mktemp("scaling") / "run"
    run_scaling(ml100k.directory, out, SMALL, out.parent / ".cache")
    return out, ScalingReport.from_json((out / "report.json").read_bytes())


def test_every_cell_is_distilled_and_its_figures_agree_with_its_aucs(study: tuple[Path, ScalingReport]) -> None:
    out, report = study
    assert [(r.size, r.history_limit) for r in report.rows] == SMALL.teachers()
    assert report.row("seq-xs", None).parameters > report.row("seq-2xs", None).parameters
    for row in report.rows:
        assert _inside(row.teacher_auc, row.teacher_auc_ci95)
        assert _inside(row.student_auc, row.student_auc_ci95)
        gain = row.teacher_auc - report.baseline_auc
        assert row.teacher_gain_auc == pytest.approx(gain, abs=2e-6)
        if row.transferability is not None:  # defined only when the teacher's gain has an interval above 0
            assert row.transferability_ci95 is not None
            assert row.transferability_ci95.low is not None
            assert row.transferability == pytest.approx((row.student_auc - report.baseline_auc) / gain, abs=2e-3)
        references = {"baseline": report.baseline_auc, **report.controls_auc}
        if row.history_limit != SHORT:  # the same size reading only the student's window: capacity alone
            references["short_history_teacher"] = report.row(row.size, SHORT).student_auc
        assert row.attributable_gain_auc == pytest.approx(row.student_auc - max(references.values()), abs=2e-6)
        assert (row.best_control or "baseline") in references
    assert report.test_events == 1_500


def test_the_table_and_the_plots_are_written(study: tuple[Path, ScalingReport]) -> None:
    out, report = study
    table = (out / "scaling.md").read_text()
    assert table.count("\n| seq-") == len(report.rows)
    for name in ("scaling_by_size.png", "scaling_by_history.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "report.json").read_text())
    data["format"] = 99
    with pytest.raises(DataError, match="format 99"):
        ScalingReport.from_json(json.dumps(data).encode())


def test_teachers_come_from_the_cache_the_second_time(study: tuple[Path, ScalingReport], ml100k: PreparedDataset
                                                      ) -> None:
    out, _ = study
    again = ScalingStudy(ml100k.directory, out.parent / "again", SMALL, out.parent / ".cache")
    manifest, cached, phase, scores, _ = again.teacher("seq-2xs", SHORT)
    assert cached
    assert manifest.train["history_limit"] == SHORT
    assert phase.raw_soft is not None
    assert phase.raw_soft.shape == again.data.train.labels.shape
    assert scores.shape == again.test.labels.shape


def test_bad_input_is_refused_before_any_training(tmp_path: Path) -> None:
    runner = CliRunner()
    unknown = runner.invoke(app, ["study", "scaling", "--sizes", "seq-xs,seq-huge", "--out", str(tmp_path / "a")])
    assert unknown.exit_code == 2
    assert "seq-xl" in unknown.output, "an unknown size names the sizes there are"
    limits = runner.invoke(app, ["study", "scaling", "--history-limits", "10,lots", "--out", str(tmp_path / "b")])
    assert limits.exit_code == 2
    assert "--history-limits" in limits.output
    grid = runner.invoke(app, ["study", "scaling", "--grid", "tpu", "--out", str(tmp_path / "c")])
    assert grid.exit_code == 2
    if not torch.cuda.is_available():
        cuda = runner.invoke(app, ["study", "scaling", "--device", "cuda", "--out", str(tmp_path / "d")])
        assert cuda.exit_code == 2
        assert "no CUDA device" in cuda.output
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_a_size_the_machine_cannot_hold_stops_the_study_before_any_training(
        ml100k: PreparedDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = ScalingStudy(ml100k.directory, tmp_path / "run", SMALL, tmp_path / ".cache")
    monkeypatch.setattr("psutil.virtual_memory", lambda: type("M", (), {"available": 1 << 20})())
    with pytest.raises(DataError, match=r"seq-2xs needs about .* GiB .* free"):
        study.run()
    assert not (tmp_path / ".cache").exists(), "nothing trained"
