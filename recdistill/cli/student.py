"""`recdistill student ...`: run the ranking server and operate its model registry."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from recdistill.cli.common import shown
from student_server import StudentSettings as S

app = typer.Typer(help="The student server: HTTP + gRPC ranking with hot-swappable ONNX models.",
                  no_args_is_help=True)
models = typer.Typer(help="Operate the model registry of a running server (operator API).", no_args_is_help=True)
app.add_typer(models, name="models")
console = Console()


CONFIG = typer.Option(None, "--config", help="TOML config file (its `student` table); precedence: defaults < "
                                          "config file < environment (STUDENT_*) < flags given here.")


@app.command("serve")
def serve_command(
    ctx: typer.Context,
    config: Path | None = CONFIG,
    registry: Path | None = typer.Option(None, help="Model registry directory (features.json, versions) "
                                                    f"{shown(S, 'registry')}."),
    host: str | None = typer.Option(None, help=shown(S, "host")),
    port: int | None = typer.Option(None, help=f"HTTP port {shown(S, 'port')}."),
    grpc_port: int | None = typer.Option(None, help=f"gRPC port {shown(S, 'grpc_port')}."),
    workers: int | None = typer.Option(None, min=1, help="Server processes (one per core is the usual choice) "
                                                         f"{shown(S, 'workers')}."),
    sampling_rate: float | None = typer.Option(None, min=0.0, max=1.0, help="Share of requests written to the "
                                                                           f"sample log {shown(S, 'sampling_rate')}."),
    sampling_rate_long_history: float | None = typer.Option(
        None, min=0.0, max=1.0, help="Sampling rate for users with long histories (default: --sampling-rate)."),
    sampling_rate_by_source: list[str] | None = typer.Option(
        None, "--sampling-rate-by-source", metavar="SOURCE=RATE", help="Sample requests whose traffic-source "
        "header is SOURCE at RATE times the other rules' rate; repeatable "
        f"{shown(S, 'sampling_rate_by_source')}."),
    exploration_rate: float | None = typer.Option(
        None, min=0.0, max=1.0,
        help=f"Share of requests served in a random order (the exploration slice) {shown(S, 'exploration_rate')}."),
    sample_log: str | None = typer.Option(
        None, help="Sample log: file:DIR or redis://HOST:PORT/N (env RECDISTILL_SAMPLE_LOG) "
                   f"{shown(S, 'sample_log')}."),
    server_id: str | None = typer.Option(None, help="Stable name of this server's sample-log partitions "
                                                    "(default: the host name)."),
    registry_store: str | None = typer.Option(None, help="A fleet's shared active-version pointer, "
                                              "redis://HOST:PORT/N (env RECDISTILL_REGISTRY_STORE) (default: "
                                              "state.json in the registry, polled)."),
) -> None:
    """Serve ranking requests until SIGTERM / Ctrl-C (the operator token comes from RECDISTILL_ADMIN_TOKEN)."""
    from recdistill.cli.common import settings_from_cli
    from student_server import StudentSettings, serve

    settings = settings_from_cli(StudentSettings, config, "student", registry=registry, host=host, port=port,
                             grpc_port=grpc_port, workers=workers, sampling_rate=sampling_rate,
                             sampling_rate_long_history=sampling_rate_long_history, sample_log=sample_log,
                             server_id=server_id, registry_store=registry_store, exploration_rate=exploration_rate,
                             sampling_rate_by_source=_source_rates(sampling_rate_by_source))
    if not (settings.registry / "features.json").exists():
        raise typer.BadParameter(f"{settings.registry} has no features.json: not a model registry",
                                 param_hint="--registry")
    options = ctx.find_root().obj or {}
    if options.get("log_json") is None:  # a server logs JSON lines unless told otherwise
        from recdistill.core.logs import configure_logging

        configure_logging(options.get("log_level", logging.INFO), json_lines=True)
    serve(settings)


def _source_rates(values: list[str] | None) -> dict[str, float] | None:
    if not values:
        return None
    rates = {}
    for value in values:
        source, _, rate = value.partition("=")
        try:
            rates[source] = float(rate)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not SOURCE=RATE", param_hint="--sampling-rate-by-source") from None
    return rates


def _call(method: str, path: str, url: str, token: str | None, body: dict | None = None,
          scenario: str | None = None) -> dict:
    import httpx

    if not token:
        raise typer.BadParameter("set RECDISTILL_ADMIN_TOKEN or pass --token", param_hint="--token")
    response = httpx.request(method, f"{url.rstrip('/')}/admin{path}", headers={"Authorization": f"Bearer {token}"},
                             json=body, params={"scenario": scenario} if scenario else None, timeout=120)
    if response.status_code >= 400:
        console.print(f"[red]error {response.status_code}:[/red] {response.json().get('error', response.text)}")
        raise typer.Exit(1)
    return response.json()


URL = typer.Option("http://127.0.0.1:8080", envvar="RECDISTILL_SERVER_URL", help="Student server HTTP URL.")
TOKEN = typer.Option(None, envvar="RECDISTILL_ADMIN_TOKEN", help="Operator bearer token.")
SCENARIO = typer.Option(None, help="The scenario whose registry to act on (default: the schema's first).")


@models.command("list")
def list_command(url: str = URL, token: str | None = TOKEN,
    scenario: str | None = SCENARIO) -> None:
    """List versions (active, staged, metrics)."""
    data = _call("GET", "/versions", url, token, scenario=scenario)
    table = Table(title=f"scenario {data.get('scenario')}, active: {data['active']}")
    for column in ("version", "active", "staged", "teacher", "created"):
        table.add_column(column)
    for v in data["versions"]:
        manifest = v["manifest"]
        table.add_row(v["version"], "*" if v["active"] else "", "*" if v["staged"] else "",
                      str(manifest.get("teacher_version")), str(manifest.get("created_unix")))
    console.print(table)


@models.command("stage")
def stage_command(version: str, url: str = URL, token: str | None = TOKEN,
    scenario: str | None = SCENARIO) -> None:
    """Load, verify (sha256, schema hash), probe and warm up a version."""
    print(json.dumps(_call("POST", f"/versions/{version}/stage", url, token, scenario=scenario), indent=1))


@models.command("activate")
def activate_command(version: str, url: str = URL, token: str | None = TOKEN,
    scenario: str | None = SCENARIO) -> None:
    """Atomically switch serving to a version."""
    print(json.dumps(_call("POST", f"/versions/{version}/activate", url, token, scenario=scenario), indent=1))


@models.command("rollback")
def rollback_command(url: str = URL, token: str | None = TOKEN,
    scenario: str | None = SCENARIO) -> None:
    """Switch back to the previously active version."""
    print(json.dumps(_call("POST", "/rollback", url, token, scenario=scenario), indent=1))


@models.command("delete")
def delete_command(version: str, url: str = URL, token: str | None = TOKEN,
    scenario: str | None = SCENARIO) -> None:
    """Delete a version that is not active."""
    print(json.dumps(_call("DELETE", f"/versions/{version}", url, token, scenario=scenario), indent=1))


@models.command("holdback")
def holdback_command(version: str, share: float = typer.Option(..., min=0.0, max=1.0, help="Share of users kept "
                                                               "on VERSION (by a hash of the user id)."),
                     salt: str = typer.Option("holdback", help="A new salt draws new users."),
                     url: str = URL, token: str | None = TOKEN,
    scenario: str | None = SCENARIO) -> None:
    """Start an A/B test: keep a share of users on VERSION while the others get the active version."""
    body = {"version": version, "share": share, "salt": salt}
    print(json.dumps(_call("PUT", "/holdback", url, token, body, scenario=scenario), indent=1))


@models.command("end-holdback")
def end_holdback_command(url: str = URL, token: str | None = TOKEN,
    scenario: str | None = SCENARIO) -> None:
    """End the A/B test: every user gets the active version."""
    print(json.dumps(_call("DELETE", "/holdback", url, token, scenario=scenario), indent=1))
