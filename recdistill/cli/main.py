"""Root of the `recdistill` command: one sub-app per component."""

from __future__ import annotations

import logging

import typer

from recdistill.cli import data, demo, student, study, teacher, worker

app = typer.Typer(help="Rec-Distill: distil a Triton-served teacher into fast ONNX ranking students.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(data.app, name="data")
app.add_typer(teacher.app, name="teacher")
app.add_typer(student.app, name="student")
app.add_typer(worker.app, name="worker")
app.add_typer(study.app, name="study")
app.command("demo")(demo.demo_command)


@app.callback()
def main(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    log_json: bool | None = typer.Option(None, "--log-json/--log-text", envvar="RECDISTILL_LOG_JSON",
                                         help="Structured logs (one JSON object per line; the default of "
                                              "`student serve`) or text for a terminal (the others' default)."),
) -> None:
    from recdistill.core.logs import configure_logging

    level = logging.DEBUG if verbose else logging.INFO
    ctx.obj = {"log_level": level, "log_json": log_json}
    configure_logging(level, json_lines=bool(log_json))
