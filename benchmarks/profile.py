"""Where a server's time goes: py-spy samples the server process while a load runs, only the thread that holds
the GIL (`--gil`, so threads waiting on a queue or a socket are not counted), and each sample is charged to
the stage its innermost recognised frame belongs to. ONNX Runtime and socket I/O release the GIL: their
native time is not in these figures (the server's CPU per request, next to them, has all of it)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RATE_HZ = 250
# (stage, substrings of a py-spy frame "function (file:line)"), tried from the innermost frame outwards.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("inference", ("onnxruntime", "Scorer.run")),
    ("sampling", ("sampling.py", "records.py", "samplelog", "redis/", "_sample_record")),
    ("logging", ("logging/", "recdistill/core/logs.py")),
    ("metrics", ("prometheus_client", "student_server/metrics.py")),
    ("encoding", ("features/encoder.py",)),
    ("parsing and validation", ("features/request.py", "contracts/rank_grpc.py", "FromString", "read_body",
                                "check_limits", "msgspec")),
    ("response", ("RankResult", "to_json", "SerializeToString", "RankResponse")),
    ("batching", ("MicroBatcher", "student_server/scoring.py")),
    ("handler", ("student_server/rank_http.py", "student_server/grpc_service.py", "student_server/service.py")),
)
OTHER = "protocol and event loop"


@dataclass
class Profile:
    per_request_us: dict[str, float]  # stage -> GIL-held microseconds a request
    requests: int

    @property
    def total_us(self) -> float:
        return sum(self.per_request_us.values())

    def note(self) -> str:
        ordered = sorted(self.per_request_us.items(), key=lambda kv: -kv[1])
        return "GIL-held time a request, py-spy: " + ", ".join(f"{stage} {us:.0f} us" for stage, us in ordered
                                                               if us >= 0.5)


def describe(found: Profile | str) -> str:
    """A row's note for what `profile_under_load` returned: the breakdown, or why there is none."""
    return found if isinstance(found, str) else found.note()


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, needles in STAGES:
            if any(needle in frame for needle in needles):
                return stage
    return OTHER


def breakdown(raw: Path, requests: int) -> dict[str, float]:
    """py-spy's raw (collapsed) output -> GIL-held microseconds a request by stage."""
    samples: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            samples[stage_of(stack.split(";"))] += int(count)
    return {stage: count / RATE_HZ * 1e6 / max(requests, 1) for stage, count in samples.items()}


def profile_under_load(pid: int, seconds: float, load: Callable[[], dict[str, float]]) -> Profile | str:
    """Run `load` (a closed loop of about `seconds` that reports its `throughput`) while py-spy samples `pid` for
    `seconds`; the reason instead when py-spy cannot attach here (not installed, or ptrace not permitted)."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        return "profile unavailable: py-spy is not installed (the dev extra has it)"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.txt"
        sampler = subprocess.Popen([str(spy), "record", "--pid", str(pid), "--gil", "--nonblocking", "--format", "raw",
                                    "--rate", str(RATE_HZ), "--duration", str(int(seconds)), "--output", str(out)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        run = load()
        try:
            _, error = sampler.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            sampler.kill()
            return "profile unavailable: py-spy did not finish"
        if sampler.returncode != 0 or not out.exists():
            return f"profile unavailable: py-spy failed ({(error or '').strip().splitlines()[-1:]})"
        requests = int(run["throughput"] * int(seconds))  # what the sampled window served
        return Profile(breakdown(out, requests), requests)
