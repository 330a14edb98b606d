"""`recdistill study ...`: offline experiments over many teachers."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Offline studies: how much of a teacher transfers as it grows, and against the student's own "
                       "training window.", no_args_is_help=True)


def _limits(text: str) -> tuple[int | None, ...]:
    try:
        return tuple(None if part.strip() == "all" else int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"comma-separated event counts or 'all', not {text!r}",
                                 param_hint="--history-limits or --windows") from None


@app.command("scaling")
def scaling_command(
    dataset: str = typer.Option("instacart", help="ml-100k, instacart, ecommerce[:EVENTS], csv:PATH, ... "
                                                  "(prepared into OUT/data)."),
    schema: Path | None = typer.Option(None, help="The dataset's schema file; default: the one shipped with it."),
    grid: str = typer.Option("cpu", help="cpu: sizes seq-3xs..seq-s, students on the most recent 10,000 training "
                                         "events, 5,000 test events, 2 seeds (2 cores); gpu: seq-xs..seq-xl, "
                                         "every event, 3 seeds, on CUDA."),
    sizes: str | None = typer.Option(None, help="Comma-separated teacher sizes (the grid's by default)."),
    history_limits: str | None = typer.Option(None, help="Comma-separated history limits, 'all' for the whole "
                                                         "history (default: 10,100,1000,all)."),
    seeds: int | None = typer.Option(None, min=1, help="Paired student seeds (the grid's by default)."),
    teacher_epochs: int | None = typer.Option(None, min=1, help="At most (early stopping on valid AUC)."),
    device: str | None = typer.Option(None, help="auto, cpu or cuda (the grid's by default)."),
    max_train_events: int | None = typer.Option(None, min=1, help="The students' training window: the most "
                                                                  "recent N training events."),
    max_holdout_events: int | None = typer.Option(None, min=1, help="The most recent N events of the valid and "
                                                                    "test windows."),
    out: Path = typer.Option(Path("runs/scaling"), help="Output directory (report.json, scaling.md, plots)."),
) -> None:
    """Train teachers across sizes and history limits, distil each into the same student on paired seeds,
    and write the table, report.json and the plots of what transfers."""
    from dataclasses import replace

    from rich.console import Console
    from rich.markup import escape

    from recdistill.cli.common import resolve_schema
    from recdistill.core.errors import DataError
    from recdistill.demo.runner import load_dataset
    from recdistill.demo.scaling import CPU, GPU, run_scaling
    from teacher_service import SEQUENCE_SIZES, resolve_device

    if grid not in ("cpu", "gpu"):
        raise typer.BadParameter("cpu or gpu", param_hint="--grid")
    config = CPU if grid == "cpu" else GPU
    changes: dict = {"seeds": seeds, "teacher_epochs": teacher_epochs, "device": device,
                     "max_train_events": max_train_events, "max_holdout_events": max_holdout_events}
    if sizes is not None:
        changes["sizes"] = tuple(s.strip() for s in sizes.split(","))
    if history_limits is not None:
        changes["history_limits"] = _limits(history_limits)
    config = replace(config, **{k: v for k, v in changes.items() if v is not None})
    unknown = [s for s in config.sizes if s not in SEQUENCE_SIZES]
    if unknown:
        raise typer.BadParameter(f"{', '.join(unknown)}: the study scales the sequence family, one of "
                                 f"{', '.join(SEQUENCE_SIZES)}", param_hint="--sizes")
    try:
        resolve_device(config.device)
    except DataError as exc:
        raise typer.BadParameter(str(exc), param_hint="--device") from None
    console = Console()
    try:
        prepared = load_dataset(dataset, resolve_schema(schema, dataset), out / "data")
        report = run_scaling(prepared.directory, out, config, out.parent / ".cache")
    except DataError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print((out / "scaling.md").read_text(), markup=False, highlight=False)
    typer.echo(f"report: {out / 'report.json'}; plots: {out / 'scaling_by_size.png'}, "
               f"{out / 'scaling_by_history.png'} ({report.seconds:.0f}s)")


@app.command("window")
def window_command(
    dataset: str = typer.Option("instacart", help="ml-100k, instacart, ecommerce[:EVENTS], csv:PATH, ... "
                                                  "(prepared into OUT/data)."),
    schema: Path | None = typer.Option(None, help="The dataset's schema file; default: the one shipped with it."),
    windows: str = typer.Option("5,10,25,50,all", help="Comma-separated training windows, in events per user "
                                                       "('all': every training event); at least 4."),
    seeds: int = typer.Option(2, min=1, help="Paired student seeds."),
    max_holdout_events: int | None = typer.Option(None, min=1, help="The most recent N events of the valid and "
                                                                    "test windows."),
    out: Path = typer.Option(Path("runs/window"), help="Output directory (report.json, window.md, the plot)."),
) -> None:
    """Distil one teacher into students trained on 5, 10, 25, 50 and every event per user: raw and attributable
    transferability (with intervals) against how much of each user's history the student's own data covers."""
    from rich.console import Console
    from rich.markup import escape

    from recdistill.cli.common import resolve_schema
    from recdistill.core.errors import DataError
    from recdistill.demo.runner import load_dataset
    from recdistill.demo.window_study import WindowConfig, run_window_study

    parsed = _limits(windows)
    if len(parsed) < 4:
        raise typer.BadParameter("at least 4 windows", param_hint="--windows")
    console = Console()
    try:
        prepared = load_dataset(dataset, resolve_schema(schema, dataset), out / "data")
        run_window_study(prepared, out, WindowConfig(windows=parsed, seeds=seeds,
                                                     max_holdout_events=max_holdout_events), out.parent / ".cache")
    except DataError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print((out / "window.md").read_text(), markup=False, highlight=False)
    typer.echo(f"report: {out / 'report.json'}; plot: {out / 'transfer_by_window.png'}")
