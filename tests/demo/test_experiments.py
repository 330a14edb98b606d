"""The demo's equal tuning on the valid window, against a real Triton teacher."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from distill_worker.settings import DistillConfig, GateConfig, TeacherClientSettings, WorkerSettings
from recdistill.core.data.dataset import PreparedDataset
from recdistill.demo.experiments import BatchExperiment, TuningGrid
from tests.conftest import RunningTriton

pytestmark = pytest.mark.e2e


def _experiment(triton: RunningTriton, data: PreparedDataset, tmp_path: Path) -> BatchExperiment:
    settings = WorkerSettings(data=data.directory, registry=tmp_path / "registry", state_dir=tmp_path / "state",
                              max_train_events=3_000, max_holdout_events=2_000,
                              teacher=TeacherClientSettings(url=triton.grpc_url, teacher_version="tiny-1"),
                              distill=DistillConfig(epochs=1, patience=1, batch_size=512, lr=8e-3),
                              gate=GateConfig(holdout_events=1_000))
    return BatchExperiment(settings)


async def test_every_variant_gets_the_same_search_on_valid_and_the_choice_is_cached(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    experiment = _experiment(triton_teacher, ml100k, tmp_path)
    await experiment.label()
    # A weight decay this large wipes the embeddings out: valid AUC must reject it.
    grid = TuningGrid(weight_decay=(0.0, 0.5), kd_weight=(1.0, 3.0), lr=(8e-3, 1.6e-2))
    # Equal search: the baseline tries learning rates where the others try teacher-term weights.
    assert grid.points("baseline") == [{"weight_decay": wd, "lr": lr} for wd in (0.0, 0.5) for lr in (8e-3, 1.6e-2)]
    assert len(grid.points("label_smoothing")) == len(grid.points("distilled")) == len(grid.points("baseline")) == 4
    with pytest.raises(ValueError, match="unequal search"):
        TuningGrid(weight_decay=(0.0,), kd_weight=(1.0, 3.0), lr=(8e-3,))

    baseline = experiment.tune("baseline", grid, cache)
    assert baseline.chosen["weight_decay"] == 0.0, baseline.valid_auc
    assert [p["weight_decay"] for p in baseline.valid_auc] == [0.0, 0.0, 0.5, 0.5]
    assert max(p["valid_auc"] for p in baseline.valid_auc[:2]) > max(p["valid_auc"] for p in baseline.valid_auc[2:])
    # The chosen point's run is the seed-0 run: test scored once for it, not for the points left out.
    kept = experiment.runs[("baseline", 0)]
    assert experiment.run("baseline", 0) is kept
    assert round(kept.valid["auc"], 6) == max(p["valid_auc"] for p in baseline.valid_auc)
    assert kept.test
    assert kept.test_scores is not None

    method = experiment.tune("distilled", grid, cache)
    assert set(method.chosen) == {"weight_decay", "kd_weight"}
    assert len(method.valid_auc) == 4
    # Ablations change one mechanism of the method and keep its tuning; the baseline keeps its own.
    assert replace(experiment.distill_config("plain_kd", 1), head="aux") == experiment.distill_config("distilled", 1)
    assert experiment.distill_config("baseline", 1).weight_decay == 0.0
    assert len(list(cache.glob("tuning-slate-*.json"))) == 2

    # Another run on the same data, objective and labels reuses the choices and trains only the kept point.
    again = _experiment(triton_teacher, ml100k, tmp_path / "again")
    await again.label()
    reused = again.tune("baseline", grid, cache)
    assert reused.cached
    assert reused.chosen == baseline.chosen
    assert reused.valid_auc == baseline.valid_auc
    assert ("baseline", 0) not in again.runs
    # Points are cached one by one: a wider grid trains only its new points and chooses among all of them.
    trained: list[dict] = []
    train = again._train
    again._train = lambda variant, seed, point=None: trained.append(point) or train(variant, seed, point)
    wider = again.tune("distilled", TuningGrid(weight_decay=(0.0, 0.5), kd_weight=(1.0, 3.0, 10.0),
                                               lr=(4e-3, 8e-3, 1.6e-2)), cache)
    assert not wider.cached
    assert [p for p in wider.valid_auc if p["kd_weight"] != 10.0] == method.valid_auc
    assert len(wider.valid_auc) == 6
    assert [p for p in trained if p is not None and p["kd_weight"] == 10.0] == \
        [{"weight_decay": 0.0, "kd_weight": 10.0}, {"weight_decay": 0.5, "kd_weight": 10.0}]
    assert len(trained) == 2
    assert len(list(cache.glob("tuning-slate-*.json"))) == 2


def test_every_input_of_a_result_is_in_its_cache_key(ml100k: PreparedDataset, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A change of the student's architecture, of the negatives or of a teacher size's dimensions misses
    the cache (the tuning key once left out the first two, and the teacher key held the size's name)."""
    from distill_worker.student import StudentConfig
    from recdistill.demo.teachers import content_key
    from teacher_service import model as teacher_model
    from teacher_service.train import TeacherTrainConfig

    settings = WorkerSettings(data=ml100k.directory, registry=tmp_path / "registry", state_dir=tmp_path / "state",
                              max_train_events=2_000, max_holdout_events=1_000, gate=GateConfig(holdout_events=500))
    key = BatchExperiment(settings)._tuning_key("baseline")
    assert BatchExperiment(settings)._tuning_key("baseline") == key, "the same inputs hit the cache"
    changed = {
        "student architecture": BatchExperiment(settings, StudentConfig(dim=8)),
        "hard-label negatives": BatchExperiment(settings.model_copy(update={"observed_negatives": 2})),
        "teacher-only negatives": BatchExperiment(settings.model_copy(update={"teacher_negatives": 2})),
        "objective": BatchExperiment(settings.model_copy(update={"distill": DistillConfig(lr=1e-2)})),
    }
    for what, experiment in changed.items():
        assert experiment._tuning_key("baseline") != key, what
    config = TeacherTrainConfig(task="slate", size="tiny")
    before = content_key(ml100k, config)
    wider = replace(teacher_model.TEACHER_SIZES["tiny"], dim=24)
    monkeypatch.setitem(teacher_model.TEACHER_SIZES, "tiny", wider)
    assert content_key(ml100k, config) != before, "the same size name with other dimensions is another teacher"
