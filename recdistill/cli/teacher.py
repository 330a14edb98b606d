"""`recdistill teacher ...`: train, serve behind Triton, score a request."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recdistill.cli.common import shown
from recdistill.core.contracts.dataset import Task
from teacher_service import TeacherServeSettings as T

app = typer.Typer(help="The teacher: train it, serve it behind Triton, score requests.", no_args_is_help=True)
console = Console()


@app.command("train")
def train_command(
    data: Path = typer.Option(Path("data/ml-100k"), help="Prepared dataset directory."),
    out: Path = typer.Option(..., help="New checkpoint directory (must not exist)."),
    task: Task = typer.Option("ctr", help="ctr or slate."),
    size: str = typer.Option("medium", help="Target attention: tiny, medium, large; causal transformer "
                                            "(every position in one pass): seq-xs, seq-s, seq-m, seq-l, seq-xl."),
    device: str = typer.Option("auto", help="auto (CUDA when there is one, else the CPU), cpu or cuda: every "
                                            "size trains there."),
    epochs: int = typer.Option(20, min=1, help="At most; early stopping on valid AUC (patience 3)."),
    batch_size: int = typer.Option(256, min=1),
    lr: float = typer.Option(2e-3),
    seed: int = typer.Option(0),
    max_train_events: int | None = typer.Option(None, help="Train on the most recent N training events only."),
    stack: bool = typer.Option(True, "--stack/--no-stack", help="Sequence family: stack the served logit with the "
                               "candidate's match count in the history, fitted on valid (kept only where valid AUC "
                               "rises); --no-stack serves the score alone."),
) -> None:
    """Train the long-sequence teacher with early stopping on valid AUC and write a checkpoint."""
    from recdistill.core.errors import DataError
    from teacher_service import TeacherTrainConfig, architecture, resolve_device, train_teacher

    resolved = None
    for check, hint in ((lambda: architecture(size), "--size"), (lambda: resolve_device(device), "--device")):
        try:
            resolved = check()
        except DataError as exc:
            raise typer.BadParameter(str(exc), param_hint=hint) from None
    config = TeacherTrainConfig(task=task, size=size, epochs=epochs, batch_size=batch_size, lr=lr,  # type: ignore[arg-type]
                                seed=seed, max_train_events=max_train_events, device=device,  # type: ignore[arg-type]
                                stack_on_valid=stack)
    manifest = train_teacher(data, out, config, resolved)  # type: ignore[arg-type]
    table = Table(title=f"{manifest.teacher_version} ({manifest.parameters:,} parameters)")
    for column in ("split", "auc", "gauc", "log_loss", "ece"):
        table.add_column(column)
    for split, m in (("valid", manifest.valid), ("test", manifest.test)):
        table.add_row(split, *(f"{m[k]:.4f}" for k in ("auc", "gauc", "log_loss", "ece")))
    console.print(table)
    if manifest.stack is not None:  # the sequence family's score stack, fitted on valid
        stack = manifest.stack
        console.print(f"score stack [score, log(1 + matches), matches > 0, 1] = {list(stack.weights)}: valid auc "
                      f"{stack.valid_auc_before:.4f} -> {stack.valid_auc_after:.4f} "
                      f"({'kept' if stack.kept else 'not kept: the score alone'})")


@app.command("serve")
def serve_command(
    checkpoint: Path | None = typer.Option(None, help="Teacher checkpoint directory (or TEACHER_CHECKPOINT)."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file (its `teacher` table); "
                                       "precedence: defaults < config file < environment (TEACHER_*) < flags."),
    http_port: int | None = typer.Option(None, help=shown(T, "http_port")),
    grpc_port: int | None = typer.Option(None, help=shown(T, "grpc_port")),
    metrics_port: int | None = typer.Option(None, help=shown(T, "metrics_port")),
    model_name: str | None = typer.Option(None, help=shown(T, "model_name")),
    instances: int | None = typer.Option(None, min=1, help="Model instances (default: cores / 2)."),
    device: str | None = typer.Option(None, help=f"auto, cpu or cuda: where the model runs (the Triton instance "
                                                 f"kind follows it); {shown(T, 'device')}."),
) -> None:
    """Serve the teacher as a Triton model over gRPC and HTTP until SIGTERM / Ctrl-C."""
    from recdistill.cli.common import settings_from_cli
    from recdistill.core.errors import RecDistillError
    from teacher_service import TeacherServeSettings, serve_teacher

    settings = settings_from_cli(TeacherServeSettings, config, "teacher", checkpoint=checkpoint, http_port=http_port,
                                 grpc_port=grpc_port, metrics_port=metrics_port, model_name=model_name,
                                 instances=instances, device=device)
    try:
        serve_teacher(settings)
    except RecDistillError as exc:  # not a checkpoint, a schema that does not match, no CUDA for `cuda`
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command("triton-config")
def triton_config_command(
    schema: Path = typer.Option(Path("data/ml-100k/features.json"), help="The feature schema (features.json)."),
    out: Path | None = typer.Option(None, help="Write here (e.g. deploy/triton/teacher/config.pbtxt); "
                                               "default: print."),
    model_name: str = typer.Option("teacher"),
    max_batch_size: int = typer.Option(64, min=1),
    device: str = typer.Option("cuda", help="cuda or cpu: where the stand-alone Triton runs the model (its "
                                            "instance kind and the model's device follow)."),
) -> None:
    """Generate the stand-alone Triton model config from the teacher's tensor spec (never edit it by hand)."""
    from recdistill.core.contracts.teacher import TeacherTensorSpec, triton_model_config
    from recdistill.core.features.schema import FeatureSchema
    from recdistill.core.fileio import atomic_write_text
    from teacher_service import triton_kind

    if device not in ("cuda", "cpu"):
        raise typer.BadParameter(f"cuda or cpu, not {device!r}", param_hint="--device")
    text = triton_model_config(TeacherTensorSpec.from_schema(FeatureSchema.load(schema)), model_name,
                               max_batch_size, instance_kind=triton_kind(device))
    if out is None:
        print(text, end="")
    else:
        atomic_write_text(out, text)
        console.print(f"wrote {out}")


@app.command("score")
def score_command(
    request: Path | None = typer.Option(None, help="A /v1/rank JSON body (default: the shipped example for the "
                                                   "schema, examples/rank_request[.SCHEMA].json)."),
    url: str = typer.Option("127.0.0.1:8001", help="Triton gRPC HOST:PORT."),
    schema: Path = typer.Option(Path("runs/demo/data/features.json"),
                                help="The feature schema (features.json; default: the one `make demo` prepared)."),
    model_name: str = typer.Option("teacher"),
) -> None:
    """Encode a ranking request with the shared encoder and print the teacher's score per candidate."""
    from recdistill.core.errors import RecDistillError, ValidationError
    from recdistill.core.features import Encoder, FeatureSchema
    from recdistill.core.features.examples import example_request
    from teacher_service import score

    fitted: FeatureSchema | None = None
    try:
        fitted = FeatureSchema.load(schema)
        request = request or example_request(fitted.name)
        parsed = fitted.parse_request(request.read_bytes())
        tensors, _ = Encoder(fitted, "teacher").encode_requests([parsed])
    except (OSError, RecDistillError) as exc:
        hint = ""
        if isinstance(exc, ValidationError) and fitted is not None:
            hint = (f" ({request} is not a request of schema {fitted.name!r}; {example_request(fitted.name)} is, "
                    "or pass one with --request)")
        console.print(f"[red]error:[/red] {escape(str(exc) + hint)}", soft_wrap=True)  # it may hold brackets
        raise typer.Exit(2) from None
    probabilities = score(url, tensors, model_name)[0]
    print(json.dumps({"scores": [
        {"item_id": str(c.item_id), "score": round(float(p), 6)}
        for c, p in zip(parsed.candidates, probabilities, strict=True)
    ]}, indent=1))
