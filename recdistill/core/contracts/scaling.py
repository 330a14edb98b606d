"""The teacher-scaling study's `report.json` (`recdistill study scaling`): one row per teacher of the grid
(size x history limit), each distilled into the same student on the same paired seeds.

It carries `format`; a reader that meets another format stops with an error naming it.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from recdistill.core.contracts.figures import Interval
from recdistill.core.errors import DataError

SCALING_FORMAT = 1


class ScalingRow(Struct, frozen=True, kw_only=True):
    size: str
    history_limit: int | None  # None: the whole history
    parameters: int
    teacher_valid_auc: float  # what early stopping read (the valid window)
    teacher_auc: float  # the test window, like every figure below
    teacher_auc_ci95: Interval
    student_auc: float  # the distilled student, mean over the paired seeds
    student_auc_ci95: Interval
    teacher_gain_auc: float  # teacher - baseline student
    attributable_gain_auc: float  # student - the best of the baseline and the controls
    attributable_gain_auc_ci95: Interval
    best_control: str | None
    transferability: float | None  # None when the teacher's gain has no interval above 0
    transferability_ci95: Interval | None
    transferability_attributable: float | None
    transferability_attributable_ci95: Interval | None
    undefined_draws: int
    teacher_seconds: float
    cached: bool  # the teacher came from the cache


class ScalingReport(Struct, frozen=True, kw_only=True):
    dataset: str
    task: str
    config: dict[str, Any]  # the study's settings (sizes, limits, seeds, student schedule), for people
    test_events: int
    test_users: int
    baseline_auc: float
    baseline_auc_ci95: Interval
    controls_auc: dict[str, float]  # soft targets without a teacher (the short-history teacher is per row)
    rows: list[ScalingRow]
    # A repeat scorer reading the last N events, before any training (recdistill.core.data.history_value).
    history_value: list[dict[str, Any]] = []
    seconds: float
    format: int = SCALING_FORMAT

    def row(self, size: str, history_limit: int | None) -> ScalingRow:
        return next(r for r in self.rows if r.size == size and r.history_limit == history_limit)

    def to_json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2)

    @classmethod
    def from_json(cls, data: bytes) -> ScalingReport:
        found = msgspec.json.decode(data).get("format")
        if found != SCALING_FORMAT:
            raise DataError(f"scaling report format {found!r} is not {SCALING_FORMAT}, the one this version reads")
        return msgspec.json.decode(data, type=cls)


class WindowRow(Struct, frozen=True, kw_only=True):
    """One student training window (events per user) of the window study, every figure on the test window."""

    window_events: int | None  # None: every training event
    train_events: int
    baseline_auc: float  # hard labels only, with the user channel
    student_auc: float  # the full method
    controls_auc: dict[str, float]
    teacher_gain_auc: float
    teacher_gain_auc_ci95: Interval
    attributable_gain_auc: float
    attributable_gain_auc_ci95: Interval
    best_control: str | None
    transferability: float | None
    transferability_ci95: Interval | None
    transferability_attributable: float | None
    transferability_attributable_ci95: Interval | None
    undefined_draws: int


class WindowReport(Struct, frozen=True, kw_only=True):
    """`recdistill study window`: transfer against how much of each user's history the student's own training
    data covers."""

    dataset: str
    teacher: str  # its version
    teacher_auc: float
    repeat_counter_auc: float
    config: dict[str, Any]  # the study's settings, for people
    test_events: int
    test_users: int
    rows: list[WindowRow]
    seconds: float
    format: int = 1
