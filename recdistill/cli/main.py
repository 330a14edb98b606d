"""Root of the `recdistill` command: one sub-app per component."""

from __future__ import annotations

import logging

import typer
from rich.logging import RichHandler

from recdistill.cli import data, student, teacher

app = typer.Typer(help="Rec-Distill: distil a Triton-served teacher into fast ONNX ranking students.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(data.app, name="data")
app.add_typer(teacher.app, name="teacher")
app.add_typer(student.app, name="student")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=True)],
    )
