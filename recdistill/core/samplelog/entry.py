"""What a sample-log reader hands the worker, whatever the backend (both backends import it)."""

from __future__ import annotations

from dataclasses import dataclass

Position = int | str  # file: the next offset of a partition; redis: the last entry id taken
DEFAULT_GROUP = "distill-worker"  # the first scenario trainer's consumer group (`places.ScenarioPlace`)


@dataclass(frozen=True)
class LogEntry:
    partition: str
    position: Position  # resume after this entry from here
    payload: bytes
    replayed: bool = False  # at or before the checkpointed position: already taken, only to be committed


def position_order(position: Position) -> tuple[int, int]:
    """A position as a sortable key within its partition (file: the offset; redis: the entry id's parts)."""
    if isinstance(position, int):
        return position, 0
    ms, _, seq = position.partition("-")
    return int(ms), int(seq or 0)


def reached(done: dict[str, Position], mark: dict[str, Position]) -> bool:
    """Whether a reader that is `done` up to these positions has got at least to `mark` in every partition."""
    return all(partition in done and position_order(done[partition]) >= position_order(position)
               for partition, position in mark.items())
