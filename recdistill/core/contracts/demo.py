"""The demo's `report.json` (`recdistill demo`): the headline figures of the serving scenario, every task's
figures, what was served during the replay, the run's settings and timings.

It carries `format`; a reader that meets another format stops with an error naming it
(`DemoReport.read`). Every task's figures (`TaskFigures`: the teacher, the students, every variant's row, the
intervals, the references), the headline's copy of them, every scenario's and the replay's (`ServingFigures`)
are typed; the settings (`config`) stay a JSON object, for people.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from msgspec import Struct

from recdistill.core.contracts.dataset import DatasetStats, Task
from recdistill.core.contracts.figures import (
    Interval,
    StudentFigures,
    TaskFigures,
    TeacherFigures,
    VariantFigures,
)
from recdistill.core.contracts.labels import LabellerReport
from recdistill.core.contracts.versioned import decode_versioned
from recdistill.core.contracts.worker import StandbyReport, StreamReport

DEMO_REPORT_FORMAT = 2  # 2: the replay's figures typed (its stream report whole, with its kind and offsets)


class DemoDataset(Struct, frozen=True, kw_only=True):
    name: str
    stats: DatasetStats
    split: dict[str, int]  # events per split


class ScenarioFigures(Struct, frozen=True, kw_only=True):
    """One scenario of the schema in the demo: its students (its own view) against the one teacher, on its task's
    test window, with the protocol's figures (the same search, paired seeds and user-level intervals as the
    headline's). The first scenario's are the headline task's."""

    name: str
    task: Task
    view: str
    history_events: int
    traffic: list[str]
    evaluated: bool
    note: str | None = None  # why a scenario was not evaluated
    student_parameters: int | None = None
    seeds: int | None = None
    teacher_auc: float | None = None
    baseline_auc: float | None = None
    distilled_auc: float | None = None
    gain_auc: float | None = None
    gain_auc_ci95: Interval | None = None
    teacher_gain_auc_ci95: Interval | None = None
    transferability: float | None = None
    transferability_ci95: Interval | None = None
    transferability_attributable: float | None = None
    transferability_attributable_ci95: Interval | None = None
    best_control: str | None = None
    # The share of its training window's teacher labels found in the label store (1.0: the teacher was not
    # asked again for this scenario).
    label_hit_rate: float | None = None
    # The live replay (the slate task): requests sent to the scenario, failed ones, examples its stream trainer
    # trained and the versions it promoted.
    served_live: int | None = None
    live_errors: int | None = None
    streamed: int | None = None
    versions_streamed: list[str] = []


class ProtocolLatency(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    requests: int
    p50_ms: float
    p99_ms: float


class OnlineVersion(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a served version did for the replayed users over the stretch of the replay it served."""

    requests: int
    real_item_in_top10: float
    click_rate: float


class ScenarioServing(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A scenario beside the first during the replay: its requests, errors, latency, its trainer's report and
    the versions it promoted."""

    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    versions_served: list[str]
    versions_promoted: list[str]
    stream: StreamReport | StandbyReport


class LabellerFigures(LabellerReport, frozen=True, kw_only=True, tag="labeller", tag_field="kind"):
    """The labeller's report, with its teacher requests a sampled request (1.0: each asked once) and the
    candidates in them (the served ones and the dense ones: the cost of dense labelling)."""

    teacher_requests_a_sampled_request: float | None = None
    teacher_candidates_a_sampled_request: float | None = None


class ServingFigures(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The replay: requests, errors, latency by protocol, hot swaps, what each served version did, the online
    A/B test and its paired counterfactual, the stream trainer's report, the other scenarios and the labeller."""

    requests: int
    errors: int
    error_kinds: list[str]
    # More than the tolerated share of the replay failing: `recdistill demo` exits 1.
    failed: bool
    first_error: str | None
    first_error_count: int
    p50_ms: float | None
    p99_ms: float | None
    per_protocol: dict[str, ProtocolLatency]
    duration_s: float
    swaps: int
    refused_by_gate: int
    clicks: int
    online_by_version: dict[str, OnlineVersion]
    online_by_version_note: str
    # The A/B test by arm and its paired counterfactual: each names its metrics by the exposed positions
    # (`real_item_in_topN`), and an arm without requests carries a note in their place.
    online_ab: dict[str, Any] | None
    online_counterfactual: dict[str, Any] | None
    counterfactual_narrower_by: float | None  # how much narrower the counterfactual's click interval is
    feedback_errors: int
    stream: StreamReport | StandbyReport | None
    scenarios: dict[str, ScenarioServing]
    labeller: LabellerFigures | None  # every sampled request labelled once for every scenario's trainer


class DemoReport(Struct, frozen=True, kw_only=True):
    dataset: DemoDataset
    headline_task: Task
    # The headline task's figures (its entry in `tasks`), repeated at the top.
    teacher: TeacherFigures
    student_baseline: StudentFigures
    student_distilled: StudentFigures
    transferability: float | None
    transferability_std: float | None
    transferability_ci95: Interval | None
    transferability_attributable: float | None
    transferability_attributable_ci95: Interval | None
    best_control: str | None
    ablations: list[VariantFigures]
    controls: list[VariantFigures]
    serving: ServingFigures | None  # the replay (none without one)
    tasks: dict[str, TaskFigures]  # every task's whole summary (the headline's figures above are its own)
    config: dict[str, Any]  # the DemoConfig the run used (`DemoConfig.to_dict`), for people
    stage_seconds: dict[str, float]
    total_seconds: float
    artifacts: dict[str, str]
    plots: list[str] = []
    scenarios: list[ScenarioFigures] = []  # every scenario the schema declares, the first being the headline's
    non_finite: list[str] = []  # paths of figures that came out NaN or infinite (a report must carry none)
    format: int = DEMO_REPORT_FORMAT

    @classmethod
    def read(cls, path: Path) -> DemoReport:
        return decode_versioned(path.read_bytes(), cls, DEMO_REPORT_FORMAT, f"{path}: demo report",
                                "run the demo again with this version")

    def to_json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2)
