"""`recdistill worker ...`: the distill worker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

app = typer.Typer(help="The distill worker: teacher labels -> debiasing -> student training -> promotion.",
                  no_args_is_help=True)


@app.command("run")
def run_command(
    mode: str = typer.Option("batch", help="batch (historical window) or stream (sampled live traffic)."),
    task: str = typer.Option("slate", help="batch: slate (the serving scenario) or ctr."),
    samples: Path = typer.Option(Path("samples"), help="stream: the student server's sample log directory."),
    steps: int | None = typer.Option(None, help="stream: stop after N steps (default: until Ctrl-C)."),
    join_window_s: float = typer.Option(60.0, help="stream: how long feedback is awaited after a request."),
    export_every: int = typer.Option(1_000, help="stream: trained examples between export attempts."),
    no_ipw: bool = typer.Option(False, "--no-ipw", help="stream: no inverse sampling-probability weights."),
    no_sampling_correction: bool = typer.Option(False, "--no-sampling-correction",
                                                help="batch: no sampling-space correction of labels and output."),
    unexposed_weight: float = typer.Option(1.0, help="Weight of teacher labels on candidates without a label "
                                                     "(0 switches them off)."),
    data: Path = typer.Option(Path("data/ml-100k"), help="Prepared dataset directory."),
    registry: Path = typer.Option(Path("registry"), help="Model registry to publish into."),
    state_dir: Path = typer.Option(Path("worker-state"), help="Worker state: soft-label store, checkpoints."),
    teacher_url: str = typer.Option("127.0.0.1:8001", help="Teacher Triton gRPC HOST:PORT."),
    teacher_version: str = typer.Option(..., help="Version of the teacher behind that URL (labels are keyed by it)."),
    teacher_data_end_ts: float | None = typer.Option(None, help="End of the teacher's training window (its "
                                                     "manifest's data_window.train_end_ts), for the lag metric."),
    server_url: str | None = typer.Option(None, help="Student server to promote to (token: RECDISTILL_ADMIN_TOKEN)."),
    no_teacher: bool = typer.Option(False, "--no-teacher", help="Train the baseline student on labels only."),
    head: str = typer.Option("aux", help="aux (decoupled head) or serving (plain KD)."),
    calibration: str = typer.Option("platt", help="none, platt or isotonic."),
    max_train_events: int | None = typer.Option(None, help="Only the most recent N training events."),
    epochs: int = typer.Option(20, min=1),
    seed: int = typer.Option(0),
) -> None:
    """Run a phase of the worker and print its report (JSON)."""
    from distill_worker.batch import run_batch
    from distill_worker.settings import TeacherClientSettings, WorkerSettings
    from distill_worker.trainer import DistillConfig

    if mode not in ("batch", "stream"):
        raise typer.BadParameter("mode must be batch or stream", param_hint="--mode")
    if task not in ("slate", "ctr") or (mode == "stream" and task != "slate"):
        raise typer.BadParameter("task must be slate or ctr (batch); the stream serves slates", param_hint="--task")
    if head not in ("aux", "serving"):
        raise typer.BadParameter("head must be aux or serving", param_hint="--head")
    if calibration not in ("none", "platt", "isotonic"):
        raise typer.BadParameter("calibration must be none, platt or isotonic", param_hint="--calibration")
    settings = WorkerSettings(data=data, registry=registry, state_dir=state_dir, server_url=server_url, task=task,
                              calibration=calibration, max_train_events=max_train_events,
                              sampling_correction=not no_sampling_correction,
                              version_prefix="baseline" if no_teacher else "student")
    teacher = TeacherClientSettings(url=teacher_url, teacher_version=teacher_version,
                                    teacher_data_end_ts=teacher_data_end_ts)
    distill = DistillConfig(use_teacher=not no_teacher, head=head, epochs=epochs, seed=seed,  # type: ignore[arg-type]
                            unexposed_weight=unexposed_weight)
    if mode == "batch":
        report = asyncio.run(run_batch(settings, teacher, distill))
    else:
        from distill_worker.stream import StreamConfig, stream_main

        report = asyncio.run(stream_main(settings, teacher, distill, samples, steps,
                                         StreamConfig(join_window_s=join_window_s, export_every=export_every,
                                                      inverse_propensity=not no_ipw)))
    print(json.dumps(report, indent=1, default=str))
