"""`recdistill data ...`: fetch and prepare datasets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recdistill.core.contracts.dataset import DatasetManifest
from recdistill.core.errors import RecDistillError

app = typer.Typer(help="Prepare datasets (MovieLens-100K or your own interaction log).", no_args_is_help=True)
console = Console()


def print_stats(manifest: DatasetManifest) -> None:
    stats = manifest.stats
    table = Table(title=f"{manifest.dataset} (schema {manifest.schema_hash})")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for name, number in (("users", stats.users), ("items", stats.items), ("interactions", stats.interactions)):
        table.add_row(name, f"{number:,}")
    table.add_row("positive_rate", str(stats.positive_rate))
    for name, value in stats.history_length_percentiles.items():
        table.add_row(f"history length {name}", str(value))
    for name, value in manifest.split.counts.items():
        table.add_row(f"{name} events", f"{value:,}")
    console.print(table)


@app.command("prepare")
def prepare_command(
    dataset: str = typer.Option("ml-100k", help="ml-100k, ecommerce[:EVENTS] (synthetic), csv:PATH, parquet:PATH "
                                                "or jsonl:PATH"),
    schema: Path | None = typer.Option(None, help="The dataset's schema file (TOML); default: the one shipped "
                                                  "for ml-100k / ecommerce."),
    out: Path = typer.Option(Path("data/ml-100k"), help="Output directory of the prepared dataset."),
    catalogue: str | None = typer.Option(None, help="Item catalogue, csv:PATH, parquet:PATH or jsonl:PATH (one "
                                                    "row per item): item features, also for items never shown."),
) -> None:
    """Read a dataset as its schema file declares; split it by global time; build histories, slates and
    the fitted feature schema (vocabularies and statistics from the training window)."""
    from recdistill.cli.common import resolve_schema
    from recdistill.core.data.prepare import prepare_source

    try:
        manifest = prepare_source(dataset, resolve_schema(schema, dataset), out, catalogue=catalogue)
    except RecDistillError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)  # the message may hold brackets
        raise typer.Exit(2) from None
    print_stats(manifest)
    console.print(f"prepared dataset written to {out}")


@app.command("schema")
def schema_command(
    check: Path | None = typer.Option(None, help="Validate this schema file and print what it declares."),
    json_schema_out: Path | None = typer.Option(None, "--json-schema", help="Write the schema file's JSON "
                                                                            "Schema (for editors) here."),
) -> None:
    """Check a schema file, or write the JSON Schema that editors use to complete and check schema files."""
    import json

    from recdistill.core.features.spec import json_schema, load_schema_spec

    if json_schema_out is not None:
        json_schema_out.write_text(json.dumps(json_schema(), indent=1) + "\n")
        console.print(f"wrote {json_schema_out}")
    if check is not None:
        try:
            spec = load_schema_spec(check)
        except RecDistillError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)  # the message may hold brackets
            raise typer.Exit(2) from None
        table = Table(title=f"schema {spec.name}")
        for column in ("feature", "entity", "kind", "column"):
            table.add_column(column)
        for entity in ("user", "context", "item"):
            for feature in spec.entity_features(entity):  # type: ignore[arg-type]
                table.add_row(feature.name, entity, feature.kind, feature.source)
        console.print(table)
        console.print("views: " + ", ".join(f"{name} ({view.history_len} events)"
                                             for name, view in spec.views.items()))
    if check is None and json_schema_out is None:
        raise typer.BadParameter("give --check FILE or --json-schema OUT")
