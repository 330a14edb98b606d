"""`recdistill demo`: the whole loop on one dataset, with a report."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer


def demo_command(
    quick: bool = typer.Option(False, "--quick", help="A small run (the slate task, a tiny teacher, one seed, "
                                                      "a short replay): the loop end to end in a few minutes."),
    seeds: int | None = typer.Option(None, min=1, help="Paired seeds (baseline and distilled); default 3, "
                                                        "1 with --quick."),
    dataset: str = typer.Option("instacart", help="instacart (repeat purchases: the long history matters), ml-100k, "
                                                  "ecommerce[:EVENTS] (synthetic), csv:PATH, parquet:PATH or "
                                                  "jsonl:PATH"),
    schema: Path | None = typer.Option(None, help="The dataset's schema file (TOML); default: the one shipped "
                                                  "for instacart / ml-100k / ecommerce."),
    catalogue: str | None = typer.Option(None, help="Item catalogue for your own data: csv:PATH, parquet:PATH or "
                                                    "jsonl:PATH."),
    out: Path | None = typer.Option(None, help="Run directory (default runs/demo, or runs/quick with --quick)."),
    config_file: Path | None = typer.Option(None, "--config", help="A TOML file whose \\[demo] table sets the run's "
                                                                   "settings by name (DemoConfig's fields); an "
                                                                   "unknown key is refused."),
    teacher_size: str | None = typer.Option(None, help="The teacher's size, or candidate sizes (comma-separated, "
                                                       "chosen on valid); default: chosen from the data."),
    log_backend: Literal["file", "redis"] = typer.Option(
        "file", help="The live stage's sample log: file (segment files) or redis (Redis Streams on a Valkey server "
                     "this demo starts)."),
) -> None:
    """Prepare data, train or reuse the teacher, serve it with Triton, train baseline and distilled students,
    replay live traffic against the student server while the worker streams and hot-swaps, then report."""
    import signal
    from dataclasses import replace

    from recdistill.cli.common import resolve_schema
    from recdistill.core.errors import DataError
    from recdistill.demo.config import load_config_file, preset
    from recdistill.demo.runner import run_demo
    from teacher_service import architecture

    schema_path = resolve_schema(schema, dataset)
    out = out or Path("runs") / ("quick" if quick else "demo")
    # SIGTERM (a job scheduler, `kill`) unwinds like Ctrl-C, so every service the demo started is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # Precedence: the preset < what the data is (in the run) < the config file < the flags given here.
    try:
        overrides = load_config_file(config_file) if config_file else {}
    except DataError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from exc
    if seeds is not None:
        overrides["seeds"] = seeds
    if teacher_size:
        sizes = tuple(s.strip() for s in teacher_size.split(",") if s.strip())
        for size in sizes:
            try:
                architecture(size)
            except DataError as exc:
                raise typer.BadParameter(str(exc), param_hint="--teacher-size") from exc
        overrides["teacher_sizes"] = sizes
    config = replace(preset(quick), sample_log=log_backend)
    report = run_demo(out, dataset, config, schema_path, catalogue, overrides, quick)
    typer.echo(f"report: {out / 'report.md'} (all figures in {out / 'report.json'})")
    if report.non_finite:
        typer.echo(f"warning: non-finite figures in the report: {report.non_finite}", err=True)
    serving = report.serving
    if serving is not None and serving.failed:
        typer.echo(f"error: {serving.errors} of the replay's {serving.requests} ranking requests failed; the "
                   f"first error, seen {serving.first_error_count} times: {serving.first_error}", err=True)
        raise typer.Exit(1)
