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
    grid = TuningGrid(weight_decay=(0.0, 0.5), kd_weight=(1.0, 3.0))
    assert grid.points("baseline") == [{"weight_decay": 0.0}, {"weight_decay": 0.5}]
    assert len(grid.points("label_smoothing")) == len(grid.points("distilled")) == 4

    baseline = experiment.tune("baseline", grid, cache)
    assert baseline.chosen == {"weight_decay": 0.0}, baseline.valid_auc
    assert [p["weight_decay"] for p in baseline.valid_auc] == [0.0, 0.5]
    assert baseline.valid_auc[0]["valid_auc"] > baseline.valid_auc[1]["valid_auc"]
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
    assert replace(experiment._distill_config("plain_kd", 1), head="aux") == experiment._distill_config("distilled", 1)
    assert experiment._distill_config("baseline", 1).weight_decay == 0.0
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
    wider = again.tune("distilled", TuningGrid(weight_decay=(0.0, 0.5), kd_weight=(1.0, 3.0, 10.0)), cache)
    assert not wider.cached
    assert [p for p in wider.valid_auc if p["kd_weight"] != 10.0] == method.valid_auc
    assert len(wider.valid_auc) == 6
    assert [p for p in trained if p is not None and p["kd_weight"] == 10.0] == \
        [{"weight_decay": 0.0, "kd_weight": 10.0}, {"weight_decay": 0.5, "kd_weight": 10.0}]
    assert len(trained) == 2
    assert len(list(cache.glob("tuning-slate-*.json"))) == 2
