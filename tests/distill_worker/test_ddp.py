"""The batch phase data-parallel under torchrun (DDP, gloo on CPU): two processes reach the test AUC of one
within noise on the same data, labels and schedule; only rank 0 publishes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recdistill.core.artifact import read_state
from recdistill.core.data.dataset import PreparedDataset
from tests.conftest import RunningTriton

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


def _batch(processes: int, ml100k: PreparedDataset, triton: RunningTriton, registry: Path, state_dir: Path,
           ) -> list[dict]:
    command = ["recdistill", "worker", "run", "--mode", "batch", "--data", str(ml100k.directory), "--registry",
               str(registry), "--state-dir", str(state_dir), "--teacher-url", triton.grpc_url, "--teacher-version",
               "tiny-1", "--max-train-events", "12000", "--epochs", "4"]
    if processes > 1:
        command = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", str(processes), "--no-python",
                   *command]
    env = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}", "WORKER_MAX_HOLDOUT_EVENTS": "2000",
                        "WORKER_GATE__AUC_TOLERANCE": "1.0",
                        "WORKER_DISTILL__BATCH_SIZE": "512", "WORKER_DISTILL__LR": "0.008"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    reports, text = [], done.stdout
    decoder = json.JSONDecoder()
    while "{" in text:
        report, end = decoder.raw_decode(text[text.index("{"):])
        reports.append(report)
        text = text[text.index("{") + end:]
    return reports


def test_two_ddp_processes_train_the_student_like_one(
    triton_teacher: RunningTriton, ml100k: PreparedDataset, registry: Path, tmp_path: Path
) -> None:
    one = _batch(1, ml100k, triton_teacher, registry, tmp_path / "one")
    two = _batch(2, ml100k, triton_teacher, registry, tmp_path / "two")
    assert len(one) == 1
    assert len(two) == 2, "one report per rank"
    main = next(r for r in two if r["rank"] == 0)
    other = next(r for r in two if r["rank"] == 1)
    assert other["published"] is None, "only rank 0 publishes"
    assert main["processes"] == 2
    assert (registry / main["published"]["version"] / "model.onnx").is_file()
    assert read_state(registry).active == "v1", "published, not promoted (no server URL given)"
    # Both learn; with the same examples per epoch, global batch and schedule, the AUCs agree within noise.
    assert min(main["test"]["auc"], one[0]["test"]["auc"]) > 0.55
    assert abs(main["test"]["auc"] - one[0]["test"]["auc"]) < 0.01, (main["test"], one[0]["test"])
    assert main["train_examples_per_s"] > 0
    print(f"1 process: auc {one[0]['test']['auc']:.4f}, {one[0]['train_examples_per_s']} ex/s; "  # noqa: T201
          f"2 processes: auc {main['test']['auc']:.4f}, {main['train_examples_per_s']} ex/s")
