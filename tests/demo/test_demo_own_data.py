"""The README's own-data walk-through with a log whose timestamps are epoch milliseconds, as most event logs
are: undeclared, preparation stops naming `timestamp_unit`; declared, the whole loop serves without an error.
And a replay that fails makes `recdistill demo` fail (it printed a report and exited 0)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recdistill.cli import app
from recdistill.core.data.ecommerce import generate_ecommerce
from recdistill.core.data.sources import shipped_schema
from recdistill.demo.live import LiveResult
from recdistill.demo.replay import Served
from recdistill.demo.report_serving import serving_summary as _serving

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]
RECDISTILL = str(Path(sys.executable).parent / "recdistill")


def _millisecond_log(directory: Path) -> tuple[Path, Path, Path, Path]:
    """(events.csv with `ts` in epoch milliseconds, its catalogue, a schema declaring the unit, the same
    schema without the declaration)."""
    log = generate_ecommerce(events=80_000)
    events = log.events.assign(ts=log.events["ts"] * 1_000 + (log.events.index.to_numpy() % 1_000))
    events.to_csv(directory / "events.csv", index=False)
    assert log.items is not None
    log.items.to_csv(directory / "items.csv", index=False)
    schema = shipped_schema("ecommerce").read_text()
    assert 'timestamp = "ts"\n' in schema
    declared, undeclared = directory / "ms.toml", directory / "undeclared.toml"
    declared.write_text(schema.replace('timestamp = "ts"\n', 'timestamp = "ts"\ntimestamp_unit = "ms"\n'))
    undeclared.write_text(schema)
    return directory / "events.csv", directory / "items.csv", declared, undeclared


def test_a_millisecond_log_runs_the_whole_loop_once_its_unit_is_declared(tmp_path: Path) -> None:
    events, items, declared, undeclared = _millisecond_log(tmp_path)
    refused = subprocess.run([RECDISTILL, "data", "prepare", "--dataset", f"csv:{events}", "--catalogue",
                              f"csv:{items}", "--schema", str(undeclared), "--out", str(tmp_path / "refused")],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert "timestamp_unit" in refused.stderr + refused.stdout
    assert 'timestamp_unit = "ms"' in refused.stderr + refused.stdout, "the error names the unit that fits"
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir()), "nothing written"

    out = tmp_path / "runs" / "clicks-ms"
    finished = subprocess.run([RECDISTILL, "demo", "--quick", "--dataset", f"csv:{events}", "--catalogue",
                               f"csv:{items}", "--schema", str(declared), "--out", str(out)],
                              capture_output=True, text=True, timeout=400)
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    serving = report["serving"]
    assert serving["requests"] > 0
    assert (serving["errors"], serving["failed"]) == (0, False), serving["error_kinds"]
    # The worker read the millisecond requests it sampled and trained on them (the times made into seconds).
    assert serving["stream"]["examples_trained"] > 0


def _served(error: str | None) -> Served:
    return Served(sent_s=0.0, latency_ms=1.0, protocol="http", version=None if error else "v1", error=error)


def test_a_failing_replay_fails_the_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The report records the failure (the first error and its count) once more than 1% of the replay's
    requests failed; the command then exits 1 naming it. (The demo's run itself is replaced here by the
    report it would return: the quick runs above cover the run.)"""
    error = 'HTTP 422: {"error":"must be <= 100000000000","field":"context.ts"}'
    live = LiveResult(served=[_served(None)] * 98 + [_served(error)] * 2, swaps=[], holdback=None,
                      holdback_at_s=None, refused=0, stream_state=None, feedback_errors=0, duration_s=1.0)
    serving = _serving(live, exposed_positions=10, samples=10)
    assert (serving.errors, serving.failed, serving.first_error, serving.first_error_count) == (2, True, error, 2)
    tolerated = dataclasses.replace(live, served=[_served(None)] * 99 + [_served(error)])
    assert not _serving(tolerated, exposed_positions=10, samples=10).failed, "1% is tolerated"
    report = types.SimpleNamespace(serving=serving, non_finite=[])  # the fields of a DemoReport the command reads
    monkeypatch.setattr("recdistill.demo.runner.run_demo", lambda *args, **kwargs: report)
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "2 of the replay's 100 ranking requests failed" in result.output
    assert error in result.output
