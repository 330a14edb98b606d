"""The demo's stages, in order; every service it starts is stopped on the way out (also on Ctrl-C)."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch

from distill_worker import BatchPhase, DistillConfig, GateConfig, TeacherClientSettings, WorkerSettings, onnx_metrics
from recdistill.core.artifact import read_manifest, write_state
from recdistill.core.contracts.demo import DemoReport
from recdistill.core.contracts.registry import RegistryState
from recdistill.core.contracts.teacher import TeacherManifest
from recdistill.core.data.dataset import PreparedDataset, Task
from recdistill.core.data.prepare import prepare_source
from recdistill.core.evaluation import evaluate
from recdistill.core.features.spec import ScenarioSpec, load_schema_spec
from recdistill.core.logs import STDERR
from recdistill.core.training import predict
from recdistill.demo.config import DemoConfig, from_data
from recdistill.demo.experiments import TEACHER_TERM, BatchExperiment, TuningGrid
from recdistill.demo.live import ScenarioLive, live_stage, stream_config, student_server_process
from recdistill.demo.online import counterfactual_ab, exploration_set
from recdistill.demo.report import StreamRun, TaskResults, write_report
from recdistill.demo.streaming import STREAM_VARIANTS, rerun_stream
from recdistill.demo.teachers import choose_teacher, train_or_reuse
from recdistill.demo.valkey import local_valkey
from teacher_service import TeacherTrainConfig, teacher_process

logger = logging.getLogger(__name__)
ABLATIONS = ("plain_kd", "no_calibration", "no_unexposed_labels")


class Stages:
    """Numbered stage headers on the console, with the time each took."""

    def __init__(self, total: int) -> None:
        self.total, self.index, self.started = total, 0, time.perf_counter()
        self.timings: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def __call__(self, name: str) -> None:
        self.finish()
        self.index += 1
        STDERR.rule(f"[bold]stage {self.index}/{self.total}: {name}")
        self._current = (name, time.perf_counter())

    def finish(self) -> None:
        if self._current:
            name, started = self._current
            self.timings[name] = round(time.perf_counter() - started, 1)
            self._current = None


def load_dataset(source: str, schema_path: Path, out: Path, catalogue: str | None = None) -> PreparedDataset:
    prepare_source(source, schema_path, out, catalogue=catalogue)
    return PreparedDataset(out)


def run_demo(out: Path, dataset_spec: str, config: DemoConfig, schema_path: Path,
             catalogue: str | None = None, overrides: dict[str, Any] | None = None, quick: bool = False) -> DemoReport:
    """`config`: the preset; once the data is prepared, what it is adapts the preset (`from_data`), then
    `overrides` (a config file's, then the command line's) win."""
    torch.set_num_threads(os.cpu_count() or 1)
    for leftover in ("registry", "worker", "samples", "labels", "logs"):  # a rerun into the same directory starts clean
        shutil.rmtree(out / leftover, ignore_errors=True)
    (out / "logs").mkdir(parents=True)
    declared = load_schema_spec(schema_path).served_scenarios
    scenarios = sum(len(other_scenarios(declared, task)) for task in config.tasks)
    stages = Stages(total=2 + 3 * len(config.tasks) + (2 if "slate" in config.tasks else 0) + scenarios + 1)
    started = time.perf_counter()
    stages(f"prepare {dataset_spec}")
    dataset = load_dataset(dataset_spec, schema_path, out / "data", catalogue)
    config = replace(from_data(config, dataset, quick), **(overrides or {}))
    logger.info("settings from the data: %s; given: %s", config.chosen_from_data, sorted(overrides or {}))
    results: dict[str, TaskResults] = {}
    for task in config.tasks:
        stages(f"teacher ({task}): train or reuse")
        base = TeacherTrainConfig(task=task, size=config.teacher_sizes[0], epochs=config.teacher_epochs,
                                  batch_size=config.teacher_batch_size, lr=config.teacher_lr,
                                  max_train_events=config.teacher_max_train_events,
                                  holdout_events=config.gate_holdout_events)
        manifest, reused, selection = choose_teacher(dataset, base, config.teacher_sizes,
                                                     config.teacher_history_limits,
                                                     out.parent / ".cache", out / "teacher" / task)
        teacher_config = replace(base, size=manifest.size, history_limit=manifest.train["history_limit"])
        results[task] = TaskResults(task=task, teacher_manifest=manifest, teacher_reused=reused,
                                    teacher_seed_manifests=[manifest], teacher_selection=selection)
        for seed in range(1, config.teacher_seeds):  # teacher noise enters the students and the interval
            seeded, _ = train_or_reuse(dataset, replace(teacher_config, seed=seed), out.parent / ".cache",
                                       out / "teacher" / f"{task}-seed{seed}")
            results[task].teacher_seed_manifests.append(seeded)
        if config.short_history_teacher:  # a control: reads only the student's window
            short = replace(teacher_config, history_limit=dataset.schema.view("student").history_len)
            results[task].short_teacher_manifest, _ = train_or_reuse(
                dataset, short, out.parent / ".cache", out / "teacher" / f"{task}-short-history")
    for task in config.tasks:
        asyncio.run(_task_stages(task, dataset, config, out, results[task], stages))
    stages("report")
    report = write_report(out, dataset, config, results, stages.timings, time.perf_counter() - started)
    stages.finish()
    return report


async def _task_stages(task: Task, dataset: PreparedDataset, config: DemoConfig, out: Path, result: TaskResults,
                       stages: Stages) -> None:
    distill = DistillConfig(epochs=config.student_epochs, patience=config.student_patience,
                            batch_size=config.student_batch_size, lr=config.student_lr, kd_weight=config.kd_weight)
    with ExitStack() as services:
        stages(f"{task}: start Triton with the teacher, label the training window")
        endpoints, _ = services.enter_context(teacher_process(
            out / "teacher" / task, log_path=out / "logs" / f"triton-{task}.log",
            niceness=config.background_niceness))
        manifest = result.teacher_manifest
        teacher = TeacherClientSettings(url=endpoints.grpc_url, teacher_version=manifest.teacher_version,
                                        teacher_data_end_ts=manifest.data_window.train_end_ts)
        settings = WorkerSettings(data=dataset.directory, registry=out / "registry", state_dir=out / "worker" / task,
                                  task=task, max_train_events=config.max_train_events,
                                  window_events=config.student_window_events, dense_own=config.dense_own,
                                  dense_popular=config.dense_popular,
                                  max_holdout_events=config.max_holdout_events, teacher=teacher, distill=distill,
                                  gate=GateConfig(holdout_events=config.gate_holdout_events))
        experiment = await asyncio.to_thread(BatchExperiment, settings)
        await experiment.label()
        result.experiment = experiment
        # The schema's other scenarios of this task: their students (their own views) learn from the same teacher,
        # whose labels of the window are in the label store already (no teacher call: `label_hit_rate` 1.0).
        for spec in other_scenarios(dataset.schema.scenarios, task):
            result.scenarios[spec.name] = await asyncio.to_thread(
                BatchExperiment, settings.model_copy(update={"scenario": spec.name}))
            await result.scenarios[spec.name].label()
        for seed, seed_manifest in enumerate(result.teacher_seed_manifests[1:], start=1):
            labelled = await _label_with_teacher([experiment, *result.scenarios.values()],
                                                 out / "teacher" / f"{task}-seed{seed}", seed_manifest,
                                                 out / "logs" / f"triton-{task}-seed{seed}.log",
                                                 config.background_niceness)
            for each, (phase, scores) in zip([experiment, *result.scenarios.values()], labelled, strict=True):
                each.teacher_phases.append(phase)
                each.teacher_seed_scores.append(scores)
        if result.short_teacher_manifest is not None:  # debiased like the real teacher's, distilled the same way
            [(phase, scores)] = await _label_with_teacher([experiment], out / "teacher" / f"{task}-short-history",
                                                          result.short_teacher_manifest,
                                                          out / "logs" / f"triton-{task}-short-history.log",
                                                          config.background_niceness)
            experiment.other_teachers["short_history_teacher"] = phase.debiased()[0]
            result.short_teacher_test, result.short_teacher_scores = experiment.metrics(scores), scores
        stages(f"{task}: batch phase, tuning on valid, {config.seeds} paired seeds + ablations and controls")
        controls = experiment.controls()
        grid = TuningGrid(config.tune_weight_decay, config.tune_kd_weight, config.tune_lr)
        for variant in ("baseline", *(v for v in TEACHER_TERM if v == "distilled" or v in controls)):
            await asyncio.to_thread(experiment.tune, variant, grid, out.parent / ".cache")
        # Every variant on the same seeds, paired seed by seed with the baseline and the method.
        variants = [(v, s) for s in range(config.seeds)
                    for v in dict.fromkeys(("baseline", "distilled", *ABLATIONS, *controls))]
        for variant, seed in variants:
            await asyncio.to_thread(experiment.run, variant, seed)
        for name, scenario in result.scenarios.items():
            stages(f"{task}: scenario {name}: the same search and paired seeds on its own view")
            await asyncio.to_thread(_scenario_students, scenario, grid, config.seeds, out.parent / ".cache")
        if task == "slate":
            sample_log = f"file:{out / 'samples'}"
            if config.sample_log == "redis":  # a real Valkey for the run; its append-only file stays in `out`
                shutil.rmtree(out / "valkey", ignore_errors=True)
                sample_log = services.enter_context(local_valkey(out / "valkey")).url
            # The labeller's label log, on the sample log's backend: every trainer reads its labels there.
            label_log = f"file:{out / 'labels'}" if sample_log.startswith("file:") else \
                f"{sample_log}{'&' if '?' in sample_log else '?'}stream=recdistill:labels"
            stages("slate: serve, replay the valid window live, stream and hot-swap")
            await _live(dataset, config, experiment, out, result, sample_log, label_log)
            stages("slate: stream ablations (offline reruns over the recorded sample log)")
            await _stream_ablations(config, experiment, result, sample_log, label_log)


def other_scenarios(scenarios: list[ScenarioSpec], task: Task) -> list[ScenarioSpec]:
    """The scenarios beside the first (whose students are the task's own experiment) that the task's teacher
    serves."""
    return [s for s in scenarios[1:] if s.task == task]


def _scenario_students(experiment: BatchExperiment, grid: TuningGrid, seeds: int, cache: Path) -> None:
    """A scenario's baseline, method and controls: the same search on valid and the same paired seeds as the
    first scenario's (the short-history teacher control aside: it reads the first scenario's window)."""
    variants = ("baseline", "distilled", *(c for c in experiment.controls() if c != "short_history_teacher"))
    for variant in variants:
        if variant == "baseline" or variant in TEACHER_TERM:
            experiment.tune(variant, grid, cache)
    for seed in range(seeds):
        for variant in variants:
            experiment.run(variant, seed)


async def _label_with_teacher(experiments: list[BatchExperiment], checkpoint: Path, manifest: TeacherManifest,
                              log_path: Path, niceness: int) -> list[tuple[BatchPhase, np.ndarray]]:
    """Labels of another teacher checkpoint (a teacher seed, or a control), through its own Triton server, for
    each experiment (a scenario's finds the first's labels in the store)."""
    with teacher_process(checkpoint, log_path=log_path, niceness=niceness) as (endpoints, _):
        teacher = TeacherClientSettings(url=endpoints.grpc_url, teacher_version=manifest.teacher_version,
                                        teacher_data_end_ts=manifest.data_window.train_end_ts,
                                        history_events=manifest.history_limit)  # all it reads
        return [await experiment.label_with(teacher) for experiment in experiments]


async def _live(dataset: PreparedDataset, config: DemoConfig, experiment: BatchExperiment, out: Path,
                result: TaskResults, sample_log: str, label_log: str) -> None:
    """Baseline active at start-up, then the replay, the batch student's promotion and the stream."""
    settings = experiment.settings
    gate_holdout = experiment.data.gate  # disjoint from training, early stopping and calibration
    valid_ids = dataset.split("valid", "slate")
    pool = valid_ids[: max(0, len(valid_ids) - config.gate_holdout_events)]
    replay_ids = pool[-config.replay_events:] if config.replay_events else pool
    baseline, distilled = experiment.run("baseline", 0), experiment.run("distilled", 0)
    registry = settings.registry
    baseline_published = experiment.phase.publish(baseline.model, replace(settings.distill, use_teacher=False),
                                                  gate_holdout, "baseline")
    baseline_version = baseline_published.version
    if not baseline_version:
        raise RuntimeError(f"the gate refused the baseline student: {baseline_published.gate.reasons}")
    write_state(registry, RegistryState(active=baseline_version))  # what the server starts with
    batch_published = experiment.phase.publish(distilled.model, settings.distill, gate_holdout, "student-batch",
                                               anchor=True)
    batch_version = batch_published.version
    if not batch_version:
        logger.warning("the gate refused the batch student: %s", batch_published.gate.reasons)
    scenarios = [s for s in map(_scenario_live, result.scenarios.values()) if s is not None]
    with student_server_process(registry, sample_log, config, out / "logs" / "student-server.log") as server:
        live_settings = settings.model_copy(update={"state_dir": settings.state_dir / "live",
                                                    "distill": replace(settings.distill, seed=0),
                                                    "label_log": label_log, "labels_from": "labeller"})
        result.live = await live_stage(config, live_settings, server, [int(e) for e in replay_ids], gate_holdout,
                                       baseline_version, batch_version, copy.deepcopy(distilled.model),
                                       experiment.calibration, out / "logs" / "replay.jsonl", scenarios)
    for swap in result.live.swaps:  # each promotion with the gate's decision (the baseline served from the start)
        quality = msgspec.to_builtins(read_manifest(registry, swap.version).metrics.quality)
        result.live_versions.append({"version": swap.version, "phase": swap.phase, "at_s": round(swap.at_s, 2),
                                     "test": onnx_metrics(registry / swap.version / "model.onnx", experiment.test),
                                     "gate": quality})
    result.counterfactual = counterfactual_ab(dataset, experiment.test.encoder, result.live, registry,
                                              config.exposed_positions, config.bootstrap_samples)


def _scenario_live(experiment: BatchExperiment) -> ScenarioLive | None:
    """A scenario's batch student (seed 0) published through the gate into its registry and active there from
    the start; None (logged) when the gate refuses it."""
    settings, distilled = experiment.settings, experiment.run("distilled", 0)
    published = experiment.phase.publish(distilled.model, settings.distill, experiment.data.gate, "student-batch",
                                         anchor=True)
    if not published.version:
        logger.warning("scenario %s: the gate refused its batch student (%s): it is not served live",
                       settings.scenario, published.gate.reasons)
        return None
    write_state(settings.target_registry(experiment.data.dataset.schema), RegistryState(active=published.version))
    return ScenarioLive(str(settings.scenario), copy.deepcopy(distilled.model), experiment.calibration,
                        experiment.data.gate)


async def _stream_ablations(config: DemoConfig, experiment: BatchExperiment, result: TaskResults,
                            sample_log: str, label_log: str) -> None:
    """Each stream variant rerun per seed, scored on the test window and on the live exploration slice."""
    settings = experiment.settings.model_copy(update={"stream": stream_config(config), "label_log": label_log,
                                                      "labels_from": "labeller"})  # the live stage's labels
    test = experiment.test
    assert result.live is not None
    explored = exploration_set(experiment.data.dataset, test.encoder, result.live)
    result.exploration = explored
    for seed in range(config.seeds):
        batch_model = experiment.run("distilled", seed).model
        for variant in STREAM_VARIANTS:
            model = await rerun_stream(variant, settings, sample_log, experiment.settings.state_dir / "rerun",
                                       batch_model, experiment.calibration, seed)
            with torch.no_grad():
                scores, mask = predict(lambda inputs, m=model: m(**inputs), test)
                on_slice = predict(lambda inputs, m=model: m(**inputs), explored.split) if explored else None
            result.stream_runs[(variant, seed)] = StreamRun(
                seed, evaluate(test.task, test.labels, scores, mask, test.user_ids), scores,
                exploration_scores=on_slice[0] if on_slice else None,
                exploration_auc=explored.auc(*on_slice) if explored and on_slice else None)
