"""The figures a report carries for a model, a variant or an interval, typed once for the demo's and the
studies' reports. A field typed `... | UnsetType` is one some rows carry and others do not (absent from the
JSON when unset, never written as null); `None` is a figure that is undefined (one seed has no spread)."""

from __future__ import annotations

from msgspec import UNSET, Struct, UnsetType, field


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
