"""One precedence for every app's settings, through the real `recdistill` commands: defaults < config
file < environment < flags given on the command line. The servers themselves are not started here
(their `serve` functions are replaced by a recorder): what is under test is the wiring to settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from recdistill.cli import app

pytestmark = pytest.mark.unit


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    import student_server.main
    import teacher_service.serve

    monkeypatch.setattr(student_server.main, "serve", lambda settings: seen.setdefault("student", settings))
    monkeypatch.setattr(teacher_service.serve, "serve", lambda settings: seen.setdefault("teacher", settings))
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "features.json").write_text("{}")
    for name in list(os.environ):
        if name.startswith(("STUDENT_", "TEACHER_", "WORKER_")):
            monkeypatch.delenv(name)
    return seen


def test_student_serve_honours_the_environment_and_a_flag_beats_it(recorded: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    registry = str(tmp_path / "registry")
    result = runner.invoke(app, ["student", "serve", "--registry", registry],
                           env={"STUDENT_SAMPLING_RATE": "0.1", "STUDENT_GRPC_PORT": "6000"})
    assert result.exit_code == 0, result.output
    settings = recorded.pop("student")
    assert (settings.sampling_rate, settings.grpc_port, settings.port) == (0.1, 6000, 8080)
    result = runner.invoke(app, ["student", "serve", "--registry", registry, "--sampling-rate", "0.3"],
                           env={"STUDENT_SAMPLING_RATE": "0.1"})
    assert result.exit_code == 0, result.output
    assert recorded.pop("student").sampling_rate == 0.3


def test_a_config_file_sits_between_the_defaults_and_the_environment(recorded: dict, tmp_path: Path) -> None:
    config = tmp_path / "recdistill.toml"
    config.write_text('[student]\nsampling_rate = 0.2\nport = 9090\n\n[teacher]\ngrpc_port = 9101\n')
    runner = CliRunner()
    registry = str(tmp_path / "registry")
    result = runner.invoke(app, ["student", "serve", "--config", str(config), "--registry", registry])
    assert result.exit_code == 0, result.output
    settings = recorded.pop("student")
    assert (settings.sampling_rate, settings.port) == (0.2, 9090)
    result = runner.invoke(app, ["student", "serve", "--config", str(config), "--registry", registry],
                           env={"STUDENT_SAMPLING_RATE": "0.4"})
    assert recorded.pop("student").sampling_rate == 0.4
    result = runner.invoke(app, ["teacher", "serve", "--config", str(config), "--checkpoint", str(tmp_path)],
                           env={"TEACHER_METRICS_PORT": "9102"})
    assert result.exit_code == 0, result.output
    teacher = recorded.pop("teacher")
    assert (teacher.grpc_port, teacher.metrics_port, teacher.http_port) == (9101, 9102, 8000)
    result = runner.invoke(app, ["teacher", "serve", "--checkpoint", str(tmp_path), "--grpc-port", "9200"],
                           env={"TEACHER_GRPC_PORT": "9001"})
    assert recorded.pop("teacher").grpc_port == 9200


def test_worker_sections_come_from_the_file_the_environment_and_flags(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    from distill_worker.settings import WorkerSettings
    from recdistill.core.settings import load_settings

    monkeypatch.setenv("WORKER_GATE__AUC_TOLERANCE", "0.01")
    monkeypatch.setenv("WORKER_STREAM__EXPORT_EVERY", "77")
    monkeypatch.setenv("WORKER_TEACHER__URL", "10.0.0.1:8001")
    monkeypatch.setenv("WORKER_TASK", "ctr")
    settings = load_settings(WorkerSettings, None, "worker", task="slate", stream={"lr": 0.5})
    assert settings.task == "slate"  # the flag
    assert settings.gate.auc_tolerance == 0.01
    assert (settings.stream.export_every, settings.stream.lr) == (77, 0.5)  # env and flag merge in a section
    assert settings.teacher.url == "10.0.0.1:8001"
    config = tmp_path / "recdistill.toml"
    config.write_text('[worker]\ncalibration = "isotonic"\n[worker.gate]\nauc_tolerance = 0.5\nlatency_runs = 9\n')
    from_file = load_settings(WorkerSettings, config, "worker", gate={"latency_budget_ms": 7.0})
    assert from_file.calibration == "isotonic"
    # Within a section: the environment beats the file, a flag adds to both, the rest stays default.
    assert (from_file.gate.auc_tolerance, from_file.gate.latency_runs, from_file.gate.latency_budget_ms) == \
        (0.01, 9, 7.0)


def test_a_bad_choice_is_a_usage_error_naming_the_option(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["worker", "run", "--calibration", "magic", "--teacher-version", "t"])
    assert result.exit_code == 2
    assert "--calibration" in result.output
    result = CliRunner().invoke(app, ["worker", "run", "--teacher-version", "t"], env={"WORKER_TASK": "ranking"})
    assert result.exit_code == 2
    assert "--task" in result.output
