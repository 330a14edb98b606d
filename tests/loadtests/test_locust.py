"""A short headless Locust run of every user against a real student server: zero failures."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from student_server.launcher import student_process
from tests.student_server.conftest import TOKEN

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]


def test_headless_locust_run_has_no_failures(registry: Path, tmp_path: Path, ml100k_dir: Path) -> None:
    bin_dir = Path(sys.executable).parent
    with student_process(registry, tmp_path / "samples", token=TOKEN, ready_timeout_s=60) as (server, _):
        env = os.environ | {"RECDISTILL_ADMIN_TOKEN": TOKEN, "RECDISTILL_GRPC_TARGET": server.grpc_target,
                            "RECDISTILL_DATA": str(ml100k_dir), "RECDISTILL_LOAD_REQUESTS": "50"}
        result = subprocess.run(
            [str(bin_dir / "locust"), "-f", str(ROOT / "loadtests"), "--headless", "-u", "6", "-r", "6",
             "-t", "8s", "--host", server.http_url, "--csv", str(tmp_path / "locust"), "--only-summary"],
            env=env, capture_output=True, text=True, timeout=120, cwd=ROOT,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    with (tmp_path / "locust_stats.csv").open() as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert int(rows["/v1/rank"]["Request Count"]) > 20
    assert int(rows["Ranking/Rank"]["Request Count"]) > 5
    assert int(rows["/admin/versions/{v}/activate"]["Request Count"]) >= 1
