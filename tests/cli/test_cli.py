from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from recdistill.cli import app

pytestmark = pytest.mark.unit


def _commands(typer_app: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    import typer.main

    group = typer.main.get_command(typer_app)
    found: list[tuple[str, ...]] = [prefix]

    def walk(command: object, path: tuple[str, ...]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            found.append((*path, name))
            walk(sub, (*path, name))

    walk(group, prefix)
    return found


def test_every_command_has_help() -> None:
    runner = CliRunner()
    commands = _commands(app)
    assert ("data", "prepare") in commands
    for command in commands:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert "Usage" in result.output


def test_help_shows_the_brackets_its_text_holds() -> None:
    """Rich reads `[word]` in a help text as markup and drops it (`--config`'s "[demo] table" once read "whose
    table"): what a help text says in brackets must reach the screen."""
    import typer.main

    runner = CliRunner()
    shown = 0
    for command in _commands(app):
        click_command = typer.main.get_command(app)
        for name in command:
            click_command = click_command.commands[name]  # type: ignore[attr-defined]
        output = " ".join(runner.invoke(app, [*command, "--help"], env={"COLUMNS": "300"}).output.split())
        for param in click_command.params:
            for bracketed in re.findall(r"\[[^\]]*\]", getattr(param, "help", None) or ""):
                assert bracketed.replace("\\[", "[") in output, (command, param.name, bracketed)
                shown += 1
    assert shown >= 3  # --config's [demo], the datasets' ecommerce[:EVENTS]


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "recdistill"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "data" in result.stdout


@pytest.mark.parametrize("label", ["label", "label == 1", "label in [1]"])
def test_prepare_a_user_csv_from_the_command_line(tmp_path: Path, label: str) -> None:
    """A CSV is read as text; a label expression compares its numbers as numbers (with pandas 3's `str`
    columns, `label == 1` once labelled every row 0)."""
    lines = ["user_id,item_id,timestamp,label"] + [f"{u},{i},{1000 + 10 * u + i},{(u + i) % 2}"
                                                   for u in range(1, 21) for i in range(1, 11)]
    (tmp_path / "log.csv").write_text("\n".join(lines))
    # The smallest schema file: the source columns and the two views, no side features.
    (tmp_path / "schema.toml").write_text(f'name = "mine"\n[source]\nlabel = "{label}"\n'
                                          "[views.teacher]\nhistory_len = 50\n[views.student]\nhistory_len = 5\n")
    result = CliRunner().invoke(app, ["data", "prepare", "--dataset", f"csv:{tmp_path / 'log.csv'}",
                                      "--schema", str(tmp_path / "schema.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["stats"]["interactions"] == 200
    assert pd.read_parquet(tmp_path / "out" / "events.parquet")["label"].sum() == 100


def test_unknown_dataset_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "prepare", "--dataset", "imagenet", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "needs its schema file" in result.output
    schema = Path(__file__).parents[2] / "recdistill" / "schemas" / "movielens-100k.toml"
    result = CliRunner().invoke(app, ["data", "prepare", "--dataset", "imagenet", "--schema", str(schema),
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown dataset 'imagenet'" in result.output


def test_json_logs_are_one_object_per_line() -> None:
    import logging

    from recdistill.core.logs import json_formatter

    record = logging.LogRecord("recdistill.x", logging.WARNING, __file__, 1, "refused %s", ("v3",), None)
    entry = json.loads(json_formatter().format(record))
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "recdistill.x"
    assert entry["message"] == "refused v3"


def test_demo_is_a_command_and_the_worker_refuses_an_unknown_task() -> None:
    runner = CliRunner()
    assert ("demo",) in _commands(app)
    for mode in ("batch", "stream"):
        result = runner.invoke(app, ["worker", "run", "--mode", mode, "--task", "ranking", "--teacher-version", "t"])
        assert result.exit_code == 2, result.output
        assert "--task" in result.output


def test_the_demo_refuses_a_config_files_unknown_key_and_an_unknown_teacher_size(tmp_path: Path) -> None:
    """Both are refused by name before anything is prepared or trained."""
    runner = CliRunner()
    bad = tmp_path / "bad.toml"
    bad.write_text('[demo]\nstudent_window_event = 10\n')
    result = runner.invoke(app, ["demo", "--config", str(bad), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "student_window_event" in result.output
    result = runner.invoke(app, ["demo", "--teacher-size", "seq-xs,enormous", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "enormous" in result.output
    assert not (tmp_path / "run").exists()


def test_the_window_study_needs_four_windows(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["study", "window", "--windows", "5,10,all", "--out", str(tmp_path / "w")])
    assert result.exit_code == 2, result.output
    assert "at least 4" in result.output
    assert not (tmp_path / "w").exists()


def test_the_labeller_needs_a_label_log_and_a_teacher_version() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["worker", "label", "--teacher-version", "t"])
    assert result.exit_code == 2, result.output
    assert "--label-log" in result.output
    result = runner.invoke(app, ["worker", "label", "--label-log", "file:labels"])
    assert result.exit_code == 2, result.output
    assert "--teacher-version" in result.output


def test_a_sampling_rule_by_source_that_is_not_source_equals_rate_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["student", "serve", "--registry", str(tmp_path),
                                      "--sampling-rate-by-source", "search:0.25"])
    assert result.exit_code == 2
    assert "--sampling-rate-by-source" in result.output
    assert "SOURCE=RATE" in result.output
    result = CliRunner().invoke(app, ["student", "serve", "--registry", str(tmp_path),
                                      "--sampling-rate-by-source", "search=2"])
    assert result.exit_code == 2
    assert "--sampling-rate-by-source" in result.output
