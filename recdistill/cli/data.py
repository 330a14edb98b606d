"""`recdistill data ...`: fetch and prepare datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from recdistill.core.data.sources import load_log
from recdistill.core.errors import DataError

app = typer.Typer(help="Prepare datasets (MovieLens-100K or your own interaction log).", no_args_is_help=True)
console = Console()


def print_stats(manifest: dict[str, Any]) -> None:
    stats, split = manifest["stats"], manifest["split"]
    table = Table(title=f"{manifest['dataset']} (schema {manifest['schema_hash']})")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for name in ("users", "items", "interactions", "positive_rate"):
        table.add_row(name, f"{stats[name]:,}" if isinstance(stats[name], int) else str(stats[name]))
    for name, value in stats["history_length_percentiles"].items():
        table.add_row(f"history length {name}", str(value))
    for name, value in split["counts"].items():
        table.add_row(f"{name} events", f"{value:,}")
    console.print(table)


@app.command("prepare")
def prepare_command(
    dataset: str = typer.Option("ml-100k", help="ml-100k, csv:PATH or parquet:PATH"),
    out: Path = typer.Option(Path("data/ml-100k"), help="Output directory of the prepared dataset."),
) -> None:
    """Fetch a dataset, split it by global time, build histories, slates and the feature schema."""
    from recdistill.core.data.prepare import prepare

    try:
        manifest = prepare(load_log(dataset), out)
    except DataError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    print_stats(manifest)
    console.print(f"prepared dataset written to {out}")
