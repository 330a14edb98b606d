"""`python -m benchmarks --quick` runs end to end and writes a well-formed results file.
(No speed is asserted here: figures live in BENCHMARKS.md, produced by `make bench`.)"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]


def test_quick_bench_writes_every_section(ml100k_dir: Path, tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--data", str(ml100k_dir), "--out", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
    results = json.loads((tmp_path / "BENCHMARKS.json").read_text())
    sections = {row["section"] for row in results["rows"]}
    assert len(sections) == 7
    assert any(section.startswith("Channel") for section in sections)
    for row in results["rows"]:
        assert math.isfinite(row["value"]), row
        assert row["command"], row
    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    assert "plain FastAPI" in markdown
    assert "the ranking core alone behind grpc.aio" in markdown
    assert "history 20,000" in markdown
    assert "64 MiB segment" in markdown
    assert "with the user channel" in markdown
    assert "through Valkey" in markdown
    assert "torchrun DDP" in markdown
    assert "labeller throughput" in markdown
