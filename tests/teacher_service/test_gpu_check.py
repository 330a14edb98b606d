"""The GPU check script's CPU twin: the same command CI can run without a GPU measures the CPU side (training
throughput, labelling through the real Triton against in-process, the 20,000-event latency) and says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]


def test_the_gpu_check_runs_its_cpu_side_without_a_gpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    finished = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--size", "seq-2xs", "--batch", "2",
                               "--seconds", "1", "--requests", "20", "--out", str(out)],
                              capture_output=True, text=True, timeout=400, cwd=Path(__file__).parents[2])
    assert finished.returncode == 0, finished.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["cuda"] == torch.cuda.is_available()
    assert figures["train"][0]["device"] == "cpu"
    assert figures["train"][0]["tokens_per_s"] > 0
    if not figures["cuda"]:
        assert figures["note"] == "no CUDA device here: the CPU side only"
    labelling = figures["labelling"]
    assert labelling["triton_candidates_per_s"] > 0
    assert labelling["in_process_candidates_per_s"] > 0
    assert labelling["latency_20000_events_ms"]["triton"] > 0
