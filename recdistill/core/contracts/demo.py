"""The demo's `report.json` (`recdistill demo`): the headline figures of the serving scenario, every task's
figures, what was served during the replay, the run's settings and timings.

It carries `format`; a reader that meets another format stops with an error naming it
(`DemoReport.read`). The per-task figures (`tasks`, the rows of ablations and controls, `serving`) are
reports for people and plots, kept as JSON objects; the fields a program reads are typed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from msgspec import Struct

from recdistill.core.contracts.dataset import DatasetStats, Task
from recdistill.core.contracts.versioned import decode_versioned

DEMO_REPORT_FORMAT = 1


class DemoDataset(Struct, frozen=True, kw_only=True):
    name: str
    stats: DatasetStats
    split: dict[str, int]  # events per split


class DemoReport(Struct, frozen=True, kw_only=True):
    dataset: DemoDataset
    headline_task: Task
    # The headline task's figures (its entry in `tasks`), repeated at the top.
    teacher: dict[str, Any]
    student_baseline: dict[str, Any]
    student_distilled: dict[str, Any]
    transferability: float | None
    transferability_std: float | None
    transferability_ci95: dict[str, Any] | None
    transferability_attributable: float | None
    transferability_attributable_ci95: dict[str, Any] | None
    best_control: str | None
    ablations: list[dict[str, Any]]
    controls: list[dict[str, Any]]
    serving: dict[str, Any] | None  # the replay: requests, errors, latency, swaps, the online A/B test
    tasks: dict[str, dict[str, Any]]
    config: dict[str, Any]
    stage_seconds: dict[str, float]
    total_seconds: float
    artifacts: dict[str, str]
    plots: list[str] = []
    non_finite: list[str] = []  # paths of figures that came out NaN or infinite (a report must carry none)
    format: int = DEMO_REPORT_FORMAT

    @classmethod
    def read(cls, path: Path) -> DemoReport:
        return decode_versioned(path.read_bytes(), cls, DEMO_REPORT_FORMAT, f"{path}: demo report",
                                "run the demo again with this version")

    def to_json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2)
