"""What a sample-log reader hands the worker, whatever the backend (both backends import it)."""

from __future__ import annotations

from dataclasses import dataclass

Position = int | str  # file: the next offset of a partition; redis: the last entry id taken
DEFAULT_GROUP = "distill-worker"  # the consumer group of the first scenario's trainer (`source.consumer_group`)


@dataclass(frozen=True)
class LogEntry:
    partition: str
    position: Position  # resume after this entry from here
    payload: bytes
    replayed: bool = False  # at or before the checkpointed position: already taken, only to be committed
