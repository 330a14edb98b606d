"""`recdistill worker ...`: the distill worker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

import msgspec
import typer

from distill_worker import WorkerSettings as W
from recdistill.cli.common import shown
from recdistill.core.contracts.dataset import Task

app = typer.Typer(help="The distill worker: teacher labels -> debiasing -> student training -> promotion.",
                  no_args_is_help=True)


@app.command("run")
def run_command(
    mode: Literal["batch", "stream"] = typer.Option("batch", help="batch (historical window) or stream (sampled "
                                                                 "live traffic)."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file (its `worker` table, with "
                                       "`worker.teacher`, `worker.distill`, `worker.stream`, `worker.gate`); "
                                       "precedence: defaults < config file < environment (WORKER_*, "
                                       "WORKER_<SECTION>__<FIELD>) < flags given here."),
    scenario: str | None = typer.Option(None, help="The schema's scenario to train: its student view, its registry "
                                                   "(registry/scenarios/NAME beyond the first), the traffic it served "
                                                   "(default: the schema's first)."),
    task: Task | None = typer.Option(None, help="slate or ctr (default: the scenario's task)."),
    sample_log: str | None = typer.Option(None, help="stream: the student servers' sample log, "
                                       "file:DIR or redis://HOST:PORT/N (env RECDISTILL_SAMPLE_LOG) "
                                       f"{shown(W, 'sample_log')}."),
    label_log: str | None = typer.Option(None, help="Share teacher labels with every trainer through a log, "
                                                    "file:DIR or redis://HOST:PORT/N?stream=NAME (default: a "
                                                    "SQLite store in --state-dir)."),
    labels_from: Literal["teacher", "labeller"] | None = typer.Option(
        None, help="teacher (ask it for missing labels) or labeller (read --label-log only, written by "
                   f"`recdistill worker label`) {shown(W, 'labels_from')}."),
    worker_id: str | None = typer.Option(None, help="stream: this worker's name in the consumer group (redis) "
                                                    "(default: host-pid)."),
    steps: int | None = typer.Option(None, help="stream: stop after N steps (default: until Ctrl-C)."),
    join_window_s: float | None = typer.Option(None, help="stream: how long feedback is awaited after a request "
                                                          f"{shown(W, 'stream.join_window_s')}."),
    export_every: int | None = typer.Option(None, help="stream: trained examples between export attempts "
                                                       f"{shown(W, 'stream.export_every')}."),
    ipw: bool | None = typer.Option(None, "--ipw/--no-ipw", help="stream: inverse sampling-probability weights "
                                                                 f"{shown(W, 'stream.inverse_propensity')}."),
    sampling_correction: bool | None = typer.Option(None, "--sampling-correction/--no-sampling-correction",
                                                    help="batch: sampling-space correction of labels and output "
                                                         f"{shown(W, 'sampling_correction')}."),
    unexposed_weight: float | None = typer.Option(
        None, help="Weight of teacher labels on candidates without a label (0 switches them off) "
                   f"{shown(W, 'distill.unexposed_weight')}."),
    data: Path | None = typer.Option(None, help=f"Prepared dataset directory {shown(W, 'data')}."),
    registry: Path | None = typer.Option(None, help=f"Model registry to publish into {shown(W, 'registry')}."),
    state_dir: Path | None = typer.Option(None, help="Worker state: soft-label store, checkpoints "
                                                     f"{shown(W, 'state_dir')}."),
    teacher_url: str | None = typer.Option(None, help=f"Teacher Triton gRPC HOST:PORT {shown(W, 'teacher.url')}."),
    teacher_version: str | None = typer.Option(None, help="Version of the teacher behind that URL (labels are "
                                                          "keyed by it)."),
    label_version: str | None = typer.Option(None, help="Train only on labels of this teacher version, read from "
                                                        "the label store or log (default: the version the teacher "
                                                        "serves)."),
    teacher_data_end_ts: float | None = typer.Option(None, help="End of the teacher's training window (its "
                                                     "manifest's data_window.train_end_ts), for the lag metric."),
    server_url: str | None = typer.Option(None, help="Student server to promote to (token: RECDISTILL_ADMIN_TOKEN)."),
    teacher: bool | None = typer.Option(None, "--teacher/--no-teacher", help="--no-teacher: train the baseline "
                                                                              "student on labels only."),
    head: str | None = typer.Option(None, help="aux (decoupled head) or serving (plain KD) "
                                               f"{shown(W, 'distill.head')}."),
    calibration: str | None = typer.Option(None, help=f"none, platt or isotonic {shown(W, 'calibration')}."),
    max_train_events: int | None = typer.Option(None, help="Only the most recent N training events."),
    epochs: int | None = typer.Option(None, min=1, help=shown(W, "distill.epochs")),
    seed: int | None = typer.Option(None, help=shown(W, "distill.seed")),
    metrics_port: int | None = typer.Option(None, help="Serve the worker's Prometheus metrics on this port."),
) -> None:
    """Run a phase of the worker and print its report (JSON)."""
    from distill_worker import WorkerSettings
    from recdistill.cli.common import settings_from_cli


    def section(**values: object) -> dict[str, object] | None:
        given = {k: v for k, v in values.items() if v is not None}
        return given or None  # a partial section: the other fields keep their file / env / default values

    settings = settings_from_cli(
        WorkerSettings, config, "worker", data=data, registry=registry, state_dir=state_dir, sample_log=sample_log,
        label_log=label_log, labels_from=labels_from,
        worker_id=worker_id,
        server_url=server_url, scenario=scenario, task=task, calibration=calibration, max_train_events=max_train_events,
        sampling_correction=sampling_correction, version_prefix=None if teacher is not False else "baseline",
        metrics_port=metrics_port,
        teacher=section(url=teacher_url, teacher_version=teacher_version, label_version=label_version,
                        teacher_data_end_ts=teacher_data_end_ts),
        distill=section(use_teacher=teacher, head=head, epochs=epochs, seed=seed, unexposed_weight=unexposed_weight),
        stream=section(join_window_s=join_window_s, export_every=export_every, inverse_propensity=ipw))
    _run(_with_scenario_task(settings), mode, steps)


def _run(settings: W, mode: str, steps: int | None) -> None:
    """Run the phase and print its report (JSON)."""
    from distill_worker import run_batch, stream_main

    if settings.distill.use_teacher and settings.teacher.teacher_version == "unknown":
        raise typer.BadParameter("give the version of the teacher behind --teacher-url (labels are keyed by it)",
                                 param_hint="--teacher-version")
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    if mode == "batch":
        report: object = asyncio.run(run_batch(settings))
    else:
        report, _ = asyncio.run(stream_main(settings, steps=steps))
    print(msgspec.json.format(msgspec.json.encode(report), indent=1).decode())


def _with_scenario_task(settings: W) -> W:
    """The scenario's task where no flag, environment or config file chose one; an unknown scenario is a usage
    error naming the declared ones."""
    from recdistill.core.errors import RecDistillError
    from recdistill.core.features.schema import FeatureSchema

    try:
        scenario = settings.target(FeatureSchema.load(settings.data / "features.json"))
    except RecDistillError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scenario" if settings.scenario else "--data") from None
    return settings if "task" in settings.model_fields_set else settings.model_copy(update={"task": scenario.task})


@app.command("label")
def label_command(
    config: Path | None = typer.Option(None, "--config", help="TOML config file (its `worker` table); the same "
                                       "precedence as `worker run`."),
    sample_log: str | None = typer.Option(None, help="The student servers' sample log, file:DIR or "
                                                     f"redis://HOST:PORT/N {shown(W, 'sample_log')}."),
    label_log: str | None = typer.Option(None, help="The label log the trainers read (--labels-from labeller), "
                                                    "file:DIR or redis://HOST:PORT/N?stream=NAME."),
    data: Path | None = typer.Option(None, help=f"Prepared dataset directory {shown(W, 'data')}."),
    state_dir: Path | None = typer.Option(None, help=f"Where dead letters go {shown(W, 'state_dir')}."),
    worker_id: str | None = typer.Option(None, help="This labeller's name (consumer, lease holder)."),
    teacher_url: str | None = typer.Option(None, help=f"Teacher Triton gRPC HOST:PORT {shown(W, 'teacher.url')}."),
    teacher_version: str | None = typer.Option(None, help="Version of the teacher behind that URL (labels are "
                                                          "keyed by it)."),
    steps: int | None = typer.Option(None, help="Stop after N steps (default: until Ctrl-C)."),
    metrics_port: int | None = typer.Option(None, help="Serve the labeller's Prometheus metrics on this port."),
) -> None:
    """Label every sampled request once, for every scenario's trainer (run them with --labels-from labeller)."""
    from distill_worker import WorkerSettings, labeller_main
    from recdistill.cli.common import settings_from_cli

    settings = settings_from_cli(
        WorkerSettings, config, "worker", data=data, state_dir=state_dir, sample_log=sample_log, label_log=label_log,
        worker_id=worker_id, metrics_port=metrics_port,
        teacher={k: v for k, v in {"url": teacher_url, "teacher_version": teacher_version}.items() if v} or None)
    if settings.teacher.teacher_version == "unknown":
        raise typer.BadParameter("give the version of the teacher behind --teacher-url (labels are keyed by it)",
                                 param_hint="--teacher-version")
    if settings.label_log is None:
        raise typer.BadParameter("the labeller writes the label log the trainers read", param_hint="--label-log")
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    report = asyncio.run(labeller_main(settings, steps=steps))
    print(msgspec.json.format(msgspec.json.encode(report), indent=1).decode())
