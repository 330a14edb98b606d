"""The bench's profile: py-spy's collapsed stacks charged to serving stages, innermost frame first."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.profile import OTHER, RATE_HZ, breakdown, stage_of

LOOP = "run (uvicorn/main.py:577);Runner.run (asyncio/runners.py:118)"
HANDLER = f"{LOOP};RankEndpoint.__call__ (student_server/rank_http.py:79)"


@pytest.mark.parametrize(("leaf", "stage"), [
    ("RequestTypes.parse (recdistill/core/features/request.py:71)", "parsing and validation"),
    ("RankingService.rank (student_server/service.py:92);Encoder.map_request "
     "(recdistill/core/features/encoder.py:254)", "encoding"),
    ("RankingService.rank (student_server/service.py:101);RankingService._sample_record "
     "(student_server/service.py:107)", "sampling"),
    ("RankResult.to_json (student_server/service.py:54)", "response"),
    ("Counter.inc (prometheus_client/metrics.py:343)", "metrics"),
    ("RankingService.rank (student_server/service.py:93)", "handler"),
])
def test_a_sample_is_charged_to_its_innermost_stage(leaf: str, stage: str) -> None:
    assert stage_of(f"{HANDLER};{leaf}".split(";")) == stage


def test_frames_of_no_stage_are_the_protocol_and_the_loop() -> None:
    assert stage_of(LOOP.split(";")) == OTHER
    assert stage_of(["Thread.run (threading.py:982)", "Session.run (onnxruntime/capi/x.py:406)"]) == "inference"


def test_breakdown_turns_samples_into_microseconds_a_request(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(f"{HANDLER};RequestTypes.parse (recdistill/core/features/request.py:71) 50\n"
                   f"{LOOP} 25\n")
    per_request = breakdown(raw, requests=100)
    assert per_request == pytest.approx({"parsing and validation": 50 / RATE_HZ * 1e6 / 100,
                                         OTHER: 25 / RATE_HZ * 1e6 / 100})
