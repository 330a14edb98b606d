"""`recdistill demo --quick`, run as a user runs it: the whole loop, then the report's structure."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from recdistill.core.contracts.demo import DemoReport

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(660)]
RECDISTILL = str(Path(sys.executable).parent / "recdistill")


def _numbers(value: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _numbers(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in _numbers(v, f"{path}[{i}]")]
    return [(path, value)] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def _services_of(out: Path) -> list[psutil.Process]:
    """Processes (Triton, the student server) still running for this demo's directory."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(out) in part for part in (process.info["cmdline"] or [])):
            found.append(process)
    return found


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`recdistill demo --quick`, once for the module: its run directory."""
    out = tmp_path_factory.mktemp("demo") / "runs" / "quick"
    started = time.monotonic()
    finished = subprocess.run([RECDISTILL, "demo", "--quick", "--out", str(out)], capture_output=True, text=True,
                              timeout=600)  # the default dataset: Instacart
    assert finished.returncode == 0, finished.stderr[-3000:]
    print(f"demo --quick took {time.monotonic() - started:.0f}s")
    return out


def test_quick_demo_writes_a_complete_report(quick_demo: Path) -> None:
    out = quick_demo
    report = json.loads((out / "report.json").read_text())
    assert DemoReport.read(out / "report.json").headline_task == "slate", "the file is the typed contract"

    for key in ("auc", "gauc", "log_loss", "ece", "ndcg@10"):
        for model in ("teacher", "student_baseline", "student_distilled"):
            assert 0.0 <= report[model][key] <= 10.0, (model, key)
    assert report["non_finite"] == []
    for path, number in _numbers(report):
        assert math.isfinite(number), path
    assert list(report["tasks"]) == ["slate"], "quick mode runs the serving scenario only"
    summary = report["tasks"]["slate"]
    # The statistics: the attributable gain in AUC with its paired interval, every draw kept and counted, a
    # ratio only where the teacher's gain has an interval above 0, every control on the method's seeds.
    assert summary["bootstrap_resamples"] >= 2_000
    assert 0 <= summary["undefined_draws"] <= summary["bootstrap_resamples"]
    gain = summary["attributable_gain_auc_ci95"]
    assert gain["low"] <= summary["attributable_gain_auc"] <= gain["high"]
    defined = summary["teacher_gain_auc_ci95"]["low"] is not None and summary["teacher_gain_auc_ci95"]["low"] > 0
    assert summary["ratio_defined"] == defined
    assert (summary["transferability"] is not None) == defined
    assert summary["best_control"] in ("self_distillation", "label_smoothing", "no_unexposed_labels",
                                       "no_user_channel")
    assert report["transferability_attributable"] == summary["transferability_attributable"]
    for row in report["controls"] + report["ablations"]:
        if row.get("phase") != "stream":
            assert row["seeds"] == summary["student_distilled"]["seeds"], row["name"]
    buckets = summary["by_history_length"]
    assert sum(b["events"] for b in buckets) == summary["test_events"]
    assert all({"history_events", "users", "events"} <= set(b) for b in buckets)
    assert summary["test_users"] < summary["test_events"]
    # The default dataset is one where the long history matters, measured before any training.
    value = {row["history_events"]: row["auc"] for row in summary["history_value"]}
    assert list(value) == [10, 100, 1000, "all"]
    assert value["all"] > value[10] + 0.05, value
    names = {row["name"] for row in report["ablations"]}
    assert {"plain_kd", "no_calibration", "no_unexposed_labels", "batch_only", "stream_no_ipw",
            "stream_no_position_tower"} <= names
    # The short-history teacher control is off in --quick (tests/teacher_service covers its serving path).
    # The shipped Instacart schema declares a user channel: its control (the channel off) runs.
    assert {row["name"] for row in report["controls"]} == {"self_distillation", "label_smoothing",
                                                           "no_unexposed_labels", "no_user_channel"}
    # The channel: one row per channel control, the student's training window, the no-teacher references on the
    # same slates and the teacher's margin over the better one, with its interval.
    assert {row["name"] for row in summary["channels"]} == {"self_distillation", "no_unexposed_labels",
                                                            "no_user_channel"}
    assert summary["student_window_events"] == report["config"]["student_window_events"] == 10
    references = {row["name"]: row for row in summary["references"]}
    assert set(references) == {"repeat_counter", "hard_label_student"}
    assert abs(references["hard_label_student"]["auc"] - summary["student_baseline"]["auc"]) < 1e-4
    margin = summary["teacher_margin_over_best_reference"]
    best = max(references.values(), key=lambda row: row["auc"])
    assert margin["reference"] == best["name"]
    assert margin["auc"] == best["teacher_margin_auc"]
    assert margin["ci95"]["low"] <= margin["auc"] <= margin["ci95"]["high"]
    assert margin["met"] == (margin["auc"] >= 0.02 and margin["ci95"]["low"] > 0)
    assert report["config"]["chosen_from_data"]["repeat_share"] > 0.3, "repeat purchases, read from the data"
    # On repeat purchases the teacher's score stacked with the match count (fitted on valid) lifts valid AUC.
    for seed in summary["teacher"]["per_seed"]:
        stack = seed["score_stack"]
        assert stack["kept"], stack
        assert stack["valid_auc_after"] > stack["valid_auc_before"]
        assert len(stack["weights"]) == 4
    assert {row["name"] for row in report["tasks"]["slate"]["stream"]} >= {"batch_only", "stream"}
    # The baseline, the method and every control that ran went through the same search on valid.
    assert set(summary["tuning"]) == {"baseline", "distilled", "self_distillation", "label_smoothing"}
    assert "valid window" in summary["protocol"]
    # Debiasing is measured against a logging policy the student cannot see, on the exploration slice (kept out
    # of training) and the test window, each ablation paired with the full stream.
    debiasing = summary["debiasing_evaluation"]
    assert "hidden variable" in debiasing["design"]
    explored = debiasing["exploration_slice"]
    assert 0 < explored["requests"] < report["config"]["replay_events"]
    for name in ("stream_no_ipw", "stream_no_position_tower", "batch_only"):
        interval = debiasing[name]["test_auc_minus_stream"]
        assert interval["low"] <= interval["difference"] <= interval["high"]
    assert 0 < report["serving"]["stream"]["exploration_held_out"] <= explored["requests"]
    # The A/B test: the baseline held back for a share of users while the rest got the distilled versions.
    assert "not an A/B" in report["serving"]["online_by_version_note"]
    ab = report["serving"]["online_ab"]
    assert ab["mismatched_control_requests"] == 0
    assert ab["control"]["versions"] == [ab["control_version"]] == [summary["promoted_versions"][0]["version"]]
    assert ab["control_version"] not in ab["treatment"]["versions"]
    assert ab["control"]["requests"] + ab["treatment"]["requests"] < report["config"]["replay_events"]
    difference = ab["treatment_minus_control"]["click"]
    assert difference["low"] <= difference["high"]
    assert difference["detectable_at_80_power"] > 0
    # The same question asked of every request, paired: a narrower interval than the live A/B's.
    paired = report["serving"]["online_counterfactual"]
    assert paired["control_version"] == ab["control_version"]
    assert paired["requests"] > ab["control"]["requests"] + ab["treatment"]["requests"], "the exploration slice too"
    cf = paired["treatment_minus_control"]
    assert cf["low"] <= cf["difference"] <= cf["high"]
    assert report["serving"]["counterfactual_narrower_by"] > 1

    serving = report["serving"]
    assert serving["errors"] == 0
    assert serving["per_protocol"]["http"]["requests"] > 0
    assert serving["per_protocol"]["grpc"]["requests"] > 0
    assert serving["stream"]["examples_trained"] > 0
    assert serving["stream"]["feedback_joined"] > 0
    counts = serving["stream"]
    assert counts["records_consumed"] == sum(counts[k] for k in (
        "examples_trained", "exploration_held_out", "dead_lettered", "duplicates", "feedback_joined",
        "unmatched_feedback", "waiting_requests", "waiting_feedback", "other_scenario")), counts

    _check_scenarios(report, out)

    versions = report["tasks"]["slate"]["promoted_versions"]
    assert versions[0]["phase"] == "baseline"
    # At least one distilled version (the batch student or a streamed one) passed the gate and was
    # hot-swapped in while the replay was being served, without a failed request.
    swapped = [v for v in versions[1:] if v["phase"] in ("batch", "stream") and v["at_s"] > 0]
    assert swapped, versions
    assert serving["swaps"] == len(versions) - 1 >= 1
    registry = {p.name for p in (out / "registry").iterdir() if p.is_dir()}
    assert {v["version"] for v in versions} <= registry
    assert (out / "teacher" / "slate" / "manifest.json").exists()
    for plot in ("calibration.png", "auc_per_version.png", "latency.png"):
        assert (out / plot).stat().st_size > 1_000
    assert "Attributable gain" in (out / "report.md").read_text()
    assert not _services_of(out), "services left running after the demo"


def _check_scenarios(report: dict, out: Path) -> None:
    summary = report["tasks"]["slate"]
    # Every declared scenario (Instacart: home, buy_again), its own student view against the one teacher, with the
    # protocol's intervals; the second scenario's students found every label of the window in the store.
    scenarios = {s["name"]: s for s in report["scenarios"]}
    assert list(scenarios) == ["home", "buy_again"]
    assert scenarios["home"]["transferability_attributable"] == summary["transferability_attributable"]
    second = scenarios["buy_again"]
    assert second["evaluated"]
    assert (second["view"], second["history_events"]) == ("student_long", 50)
    assert second["label_hit_rate"] == 1.0
    assert second["served_live"] == report["serving"]["scenarios"]["buy_again"]["requests"]
    assert second["streamed"] == report["serving"]["scenarios"]["buy_again"]["stream"]["examples_trained"]
    assert second["seeds"] == len(summary["student_distilled"]["seeds"])
    assert second["gain_auc_ci95"]["low"] <= second["gain_auc"] <= second["gain_auc_ci95"]["high"]
    assert (second["transferability"] is not None) == (second["teacher_gain_auc_ci95"]["low"] > 0)
    assert second["best_control"] in ("self_distillation", "label_smoothing", "no_user_channel")
    assert "## Scenarios" in (out / "report.md").read_text()
    # A share of the replay went to the second scenario's route: its own student served it (no error), and its
    # own stream trainer, over the same sample log, trained on it.
    serving = report["serving"]
    beside = serving["scenarios"]["buy_again"]
    assert serving["requests"] + beside["requests"] == report["config"]["replay_events"]
    assert beside["requests"] >= report["config"]["scenario_share"] * report["config"]["replay_events"] - 1
    assert beside["errors"] == 0
    assert beside["versions_served"]
    assert not set(beside["versions_served"]) & {v["version"] for v in report["tasks"]["slate"]["promoted_versions"]}
    assert beside["stream"]["examples_trained"] > 0
    assert beside["stream"]["records_consumed"] == serving["stream"]["records_consumed"], "one sample log"
    # One labeller labelled every sampled request once, for both scenarios' trainers (which never asked).
    labeller = serving["labeller"]
    assert labeller["records_read"] == serving["stream"]["records_consumed"]
    assert labeller["records_read"] == sum(labeller[k] for k in ("labelled", "already_labelled", "feedback",
                                                                 "dead_lettered"))
    assert labeller["teacher_requests"] == labeller["labelled"] > 0
    assert labeller["teacher_requests_a_sampled_request"] == 1.0
    # Each sampled request's dense candidates went into the same teacher call and were trained on (teacher head).
    assert labeller["teacher_candidates"] > labeller["teacher_requests"]
    assert labeller["teacher_candidates_a_sampled_request"] > 1
    assert serving["stream"]["dense_rows_trained"] > 0


def test_quick_demo_runs_the_whole_loop_on_the_ecommerce_schema_over_redis_streams(tmp_path: Path) -> None:
    """The second, differently shaped schema end to end, with the sample log on Redis Streams (a Valkey server
    the demo starts): prepare, teacher on Triton, students, the live replay with the stream worker and hot
    swaps, the offline stream reruns, the report. (A synthetic log: no quality claim is checked.)"""
    out = tmp_path / "runs" / "ecommerce"
    finished = subprocess.run([RECDISTILL, "demo", "--quick", "--dataset", "ecommerce:80000", "--log-backend", "redis",
                               "--out", str(out)], capture_output=True, text=True, timeout=400)
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    for model in ("teacher", "student_baseline", "student_distilled"):
        assert 0.5 < report[model]["auc"] <= 1.0, model
    serving = report["serving"]
    assert serving["errors"] == 0
    assert serving["per_protocol"]["http"]["requests"] > 0
    assert serving["per_protocol"]["grpc"]["requests"] > 0
    assert serving["stream"]["examples_trained"] > 0
    # Every swap is a promotion on record (the baseline served from the start); the gate may refuse the batch
    # student and every stream export on a synthetic log, and then says so.
    promoted = report["tasks"]["slate"]["promoted_versions"]
    assert [v["phase"] for v in promoted][:1] == ["baseline"]
    assert serving["swaps"] == len(promoted) - 1
    if serving["swaps"] == 0:  # nothing went live: the gate refused the batch student, and the stream published none
        assert "the gate refused the batch student" in " ".join(finished.stderr.split())
        assert not serving["stream"]["versions_promoted"]
    assert report["config"]["sample_log"] == "redis"
    assert (out / "valkey" / "appendonlydir").is_dir(), "the sample log went through the Valkey server"
    assert serving["stream"]["records_consumed"] > serving["stream"]["examples_trained"] > 0
    # Freshness is measured over what the stream published: none when the gate refused every export (a
    # synthetic log's stream student may not beat the batch one on the gate's holdout).
    freshness = serving["stream"]["freshness_s"]
    if serving["stream"]["versions_promoted"]:
        assert 0 < freshness["p50"] <= freshness["p95"]
        assert 0 < freshness["requests"] <= serving["stream"]["examples_trained"]
    else:
        assert freshness is None
        assert serving["stream"]["exports_refused"] > 0
    assert {row["name"] for row in report["tasks"]["slate"]["stream"]} >= {"batch_only", "stream"}
    # One schema hash pins the prepared data, the teacher, the registry and every version in it.
    schema_hash = json.loads((out / "data" / "manifest.json").read_text())["schema_hash"]
    assert json.loads((out / "teacher" / "slate" / "manifest.json").read_text())["schema_hash"] == schema_hash
    assert json.loads((out / "registry" / "features.json").read_text())["hash"] == schema_hash
    # The first scenario's versions; the server made the other scenario's registry (empty: not trained here).
    versions = [p for p in (out / "registry").iterdir() if p.is_dir() and p.name != "scenarios"]
    assert [p.name for p in (out / "registry" / "scenarios").iterdir()] == ["search"]
    assert {p.name for p in versions} >= {v["version"] for v in promoted}, "every version served is in the registry"
    for version in versions:
        assert json.loads((version / "manifest.json").read_text())["schema_hash"] == schema_hash
    assert not _services_of(out), "services left running after the demo"


@pytest.fixture(scope="module")
def interrupted_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One runs directory for both interrupted demos: they share its teacher cache (`runs/.cache`)."""
    return tmp_path_factory.mktemp("interrupted") / "runs"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_every_service(interrupted_runs: Path, stop: signal.Signals) -> None:
    out = interrupted_runs / f"interrupted-{stop.name}"  # the second run takes the first's teacher from the cache
    # SIGINT as a terminal delivers it, also when this test runs as a background job (which ignores it).
    demo = subprocess.Popen([RECDISTILL, "demo", "--quick", "--dataset", "ml-100k", "--out", str(out)],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=os.environ | {"COLUMNS": "200"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    try:
        deadline = time.monotonic() + 240
        # Wait until Triton serves the teacher (a child with the run directory on its command line).
        while not any("teacher" in " ".join(p.cmdline()) for p in _services_of(out)):
            assert demo.poll() is None, demo.stderr.read()[-3000:] if demo.stderr else ""
            assert time.monotonic() < deadline, "Triton never started"
            time.sleep(0.5)
        demo.send_signal(stop)
        demo.wait(timeout=90)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode != 0
    deadline = time.monotonic() + 30
    while _services_of(out) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _services_of(out), f"services left running after {stop.name}"


def _commands(page: Path) -> list[str]:
    """Every command in the page's bash blocks: continuations joined, trailing comments dropped."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.timeout(900)
def test_the_serving_docs_run_as_written_against_what_the_demo_left(quick_demo: Path) -> None:
    """docs/serving.md after `make demo` (here: a quick demo's run directory in place of runs/demo). The example
    request used to be a MovieLens user (422 on the Instacart registry), and Locust's payloads too."""
    from tests.student_server.conftest import wait_ready

    root = Path(__file__).parents[2]
    ports = {"8001": _free_port(), "8080": _free_port(), "50051": _free_port()}
    env = os.environ | {"TEACHER_HTTP_PORT": str(_free_port()), "TEACHER_GRPC_PORT": str(ports["8001"]),
                        "TEACHER_METRICS_PORT": str(_free_port()), "STUDENT_SAMPLE_LOG": str(quick_demo / "docs-log"),
                        "RECDISTILL_SERVER_URL": f"http://127.0.0.1:{ports['8080']}"}
    servers: list[subprocess.Popen] = []
    ran = []
    try:
        for command in _commands(root / "docs" / "serving.md"):
            line = command.replace("runs/demo", str(quick_demo))
            for port, free in ports.items():
                line = re.sub(rf"\b{port}\b", str(free), line)
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                env[name] = value
                continue
            words = shlex.split(line)
            if words[0].startswith(".venv/bin/"):
                words[0] = str(Path(sys.executable).parent / words[0].removeprefix(".venv/bin/"))
            if words[1:3] in (["teacher", "serve"], ["student", "serve"]):
                process = subprocess.Popen(words, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           text=True, start_new_session=True)
                servers.append(process)
                if words[1] == "student":
                    wait_ready(f"http://127.0.0.1:{ports['8080']}", process, timeout_s=120)
                else:
                    _wait_teacher(int(env["TEACHER_HTTP_PORT"]), process)
                continue
            done = subprocess.run(words, cwd=root, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
            if words[0] == "curl":
                assert '"error"' not in done.stdout, (command, done.stdout[:2000])
            ran.append(command)
        # The page's Python (the v3 gRPC client), against the same server.
        for block in re.findall(r"```python\n(.*?)```", (root / "docs" / "serving.md").read_text(), flags=re.S):
            code = block.replace("127.0.0.1:50051", f"127.0.0.1:{ports['50051']}")
            done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == 0, done.stderr[-3000:]
            ran.append("python: " + code.splitlines()[0])
        # Locust against that server, its payloads from what the demo prepared (runs/demo/data).
        locust = subprocess.run(
            [str(Path(sys.executable).parent / "locust"), "-f", "loadtests/", "--host",
             f"http://127.0.0.1:{ports['8080']}", "--headless", "-u", "2", "-r", "2", "-t", "4s", "--only-summary",
             "RankHttpUser", "RankGrpcUser"], cwd=root,
            env=env | {"RECDISTILL_DATA": str(quick_demo / "data"), "RECDISTILL_LOAD_REQUESTS": "20",
                       "RECDISTILL_GRPC_TARGET": f"127.0.0.1:{ports['50051']}"},
            capture_output=True, text=True, timeout=120)
    finally:
        for process in servers:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(60)
    assert any("teacher score" in c for c in ran)
    assert any("/v1/rank" in c for c in ran)
    assert any("/v1/feedback" in c for c in ran)
    assert any(c.startswith("python: ") for c in ran)
    assert locust.returncode == 0, locust.stderr[-3000:]
    assert re.search(r"Aggregated\s+\d+\s+0\(0\.00%\)", locust.stderr + locust.stdout), locust.stderr[-3000:]


def _wait_teacher(http_port: int, process: subprocess.Popen, timeout_s: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else "teacher exited"
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the teacher did not become ready")
