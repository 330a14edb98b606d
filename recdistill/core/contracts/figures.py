"""The figures a report carries for a model, a variant or an interval, typed once for the demo's and the
studies' reports. A field typed `... | UnsetType` is one some rows carry and others do not (absent from the
JSON when unset, never written as null); `None` is a figure that is undefined (one seed has no spread)."""

from __future__ import annotations

from msgspec import UNSET, Struct, UnsetType, field

from recdistill.core.contracts.teacher import ScoreStack
from recdistill.core.contracts.worker import DebiasReport, GateRole, NonInferiority


class Interval(Struct, frozen=True, kw_only=True):
    """A 95% bootstrap interval (users resampled, every draw kept); an end on an unbounded draw is None."""

    low: float | None
    high: float | None
    low_unbounded: bool = False
    high_unbounded: bool = False


class MetricFigures(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Test-window metrics, the mean over the seeds run, with their sample standard deviations (None with one
    seed); NDCG@10 on the slate task only."""

    auc: float
    gauc: float
    log_loss: float
    ece: float
    ndcg_at_10: float | UnsetType = field(default=UNSET, name="ndcg@10")
    auc_std: float | None
    gauc_std: float | None
    log_loss_std: float | None
    ece_std: float | None
    ndcg_at_10_std: float | None | UnsetType = field(default=UNSET, name="ndcg@10_std")
    seeds: list[int]


class SeedRun(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One seed's training: the epoch early stopping kept (on valid), its valid and test metrics."""

    seed: int
    best_epoch: int
    seconds: float
    valid: dict[str, float]
    test: dict[str, float]


class StudentFigures(MetricFigures, frozen=True, kw_only=True, forbid_unknown_fields=True):
    per_seed: list[SeedRun]


class VariantFigures(MetricFigures, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An ablation or a control (or a stream variant, `phase` "stream"), on the method's paired seeds."""

    name: str
    description: str
    transferability: float | None | UnsetType = UNSET  # against the same-seed baseline, where defined
    transferability_std: float | None | UnsetType = UNSET
    auc_minus_full_method: float | UnsetType = UNSET  # paired by seed; > 0: the variant beat the method
    channel: str | UnsetType = UNSET  # a channel control: what it says about the channel
    phase: str | UnsetType = UNSET
    exploration_click_auc: float | None | UnsetType = UNSET  # a stream variant, on the exploration slice


class TeacherChoice(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One teacher tried in the selection on valid."""

    size: str
    history_limit: int | None
    parameters: int
    valid_auc: float
    reused: bool
    chosen: bool


class TeacherSeed(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: str
    test_auc: float
    score_stack: ScoreStack | None = None  # the sequence family's, fitted on valid (None: another family)


class TeacherFigures(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    auc: float
    gauc: float
    log_loss: float
    ece: float
    events: float
    ndcg_at_10: float | UnsetType = field(default=UNSET, name="ndcg@10")
    auc_std: float | None
    version: str
    parameters: int
    history_events: int | str  # "all (...)" for the whole history
    reused: bool
    selection_on_valid: list[TeacherChoice]
    train_seconds: float
    per_seed: list[TeacherSeed]


class BucketFigures(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The test events whose user had `history_events` events before them; the figures where the bucket holds
    any (an empty bucket carries its counts only)."""

    history_events: str
    events: int
    users: int
    teacher_gain_auc: float | UnsetType = UNSET
    teacher_gain_auc_ci95: Interval | None | UnsetType = UNSET
    gain_auc: float | UnsetType = UNSET
    gain_auc_ci95: Interval | None | UnsetType = UNSET
    attributable_gain_auc: float | UnsetType = UNSET
    attributable_gain_auc_ci95: Interval | None | UnsetType = UNSET
    best_control: str | None | UnsetType = UNSET
    ratio_defined: bool | UnsetType = UNSET
    transferability: float | None | UnsetType = UNSET
    transferability_ci95: Interval | None | UnsetType = UNSET
    transferability_attributable: float | None | UnsetType = UNSET
    transferability_attributable_ci95: Interval | None | UnsetType = UNSET
    undefined_draws: int | UnsetType = UNSET
    bootstrap_resamples: int | UnsetType = UNSET
    aucs: dict[str, float] | UnsetType = UNSET  # the teacher's, the baseline's, the method's and each control's


class HistoryValue(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The repeat scorer reading the last `history_events` events of the history: its AUC before any training."""

    history_events: int | str  # "all": the whole history
    auc: float
    positives_in_window: float


class ReferenceFigures(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A no-teacher reference on the test slates, and the teacher's paired margin over it."""

    name: str
    auc: float
    teacher_margin_auc: float
    teacher_margin_auc_ci95: Interval


class TeacherMargin(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The teacher's margin over the best reference, against the goal it must reach (with its interval above 0)."""

    reference: str
    auc: float
    ci95: Interval
    goal: float
    met: bool


class PromotedVersion(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A version the replay served, when it went live, and its test metrics."""

    version: str
    phase: str  # baseline, batch or stream
    at_s: float
    test: dict[str, float]
    gate: dict[GateRole, NonInferiority]  # the gate's quality decisions (none for the first version)


class PairedDifference(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A difference in AUC (treatment - control) with its 95% bootstrap interval and what the draws resampled.
    `undefined_draws`: resamples without a positive or a negative (a few users' clicks), where AUC is undefined;
    the interval is over the others."""

    difference: float
    low: float
    high: float
    samples: int
    resamples: str
    undefined_draws: int = 0


class DebiasingRow(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A debiasing ablation against the full stream, paired by seed: on the test window, and on the exploration
    slice's clicks where it has any."""

    test_auc_minus_stream: PairedDifference
    exploration_click_auc_minus_stream: PairedDifference | UnsetType = UNSET


class ExplorationSlice(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    requests: int
    clicks: int
    exposed_candidates: int


class DebiasingEvaluation(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    design: str
    exploration_slice: ExplorationSlice | None
    stream_no_ipw: DebiasingRow | UnsetType = UNSET
    stream_no_position_tower: DebiasingRow | UnsetType = UNSET
    batch_only: DebiasingRow | UnsetType = UNSET


class TuningFigures(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A variant's search on valid: each point tried (its settings by name, and `valid_auc`), the one chosen, and
    whether the search was read from the cache."""

    chosen: dict[str, float]
    tried: list[dict[str, float]]
    cached: bool


class TaskFigures(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One task's whole summary in the demo's report (the headline task's figures are also at its top): the
    protocol's gains in AUC with their paired user-level intervals, the raw and teacher-attributable ratios
    (None where the teacher's gain has no interval above 0), every variant's row, the references. Keys a task
    may lack (a ctr task has no references; a task without a replay, no stream) are UNSET."""

    teacher: TeacherFigures
    student_parameters: int
    student_baseline: StudentFigures
    student_distilled: StudentFigures
    teacher_gain_auc: float
    teacher_gain_auc_ci95: Interval | None
    gain_auc: float
    gain_auc_ci95: Interval | None
    attributable_gain_auc: float
    attributable_gain_auc_ci95: Interval | None
    ratio_defined: bool
    transferability: float | None
    transferability_ci95: Interval | None
    transferability_attributable: float | None
    transferability_attributable_ci95: Interval | None
    best_control: str | None
    undefined_draws: int
    bootstrap_resamples: int
    transferability_std: float | None
    transferability_per_seed: list[float | None]
    by_history_length: list[BucketFigures]
    history_value: list[HistoryValue] | None
    transferability_note: str
    teacher_calibration: DebiasReport | None
    test_events: int
    test_users: int
    teacher_seeds: int
    tuning: dict[str, TuningFigures]  # by variant
    protocol: str
    teacher_history_gain_auc: float | UnsetType = UNSET
    teacher_history_gain_auc_ci95: Interval | UnsetType = UNSET
    # The 10-event twin's test metrics, its version and history length.
    short_history_teacher: dict[str, float | int | str | None] | UnsetType = UNSET
    ablations: list[VariantFigures]
    controls: list[VariantFigures]
    channels: list[VariantFigures]
    student_window_events: int | str  # "all": every training event
    references: list[ReferenceFigures] | UnsetType = UNSET
    teacher_margin_over_best_reference: TeacherMargin | UnsetType = UNSET
    stream: list[VariantFigures] | UnsetType = UNSET
    debiasing_evaluation: DebiasingEvaluation | UnsetType = UNSET
    promoted_versions: list[PromotedVersion] | UnsetType = UNSET
    promoted_below_batch_by_more_than_margin: list[str] | None | UnsetType = UNSET
