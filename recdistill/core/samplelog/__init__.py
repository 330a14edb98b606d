"""The sample log: where student servers put sampled requests and feedback, and the worker reads them.

Two backends behind one interface, chosen by a location URL (`LogLocation.parse`):
- `file:DIR` (or a plain path): the embedded default, segment files per partition on one machine
  (`recdistill.core.samplelog.file`);
- `redis://HOST:PORT/N`: Redis Streams on Valkey or Redis >= 6.2, for many servers and a worker on
  other machines (`recdistill.core.samplelog.redis`).

One worker trains from a log at a time: the others wait as hot standbys on its `TrainerLease`
(`open_lease`, a file lock or a Redis key).

Writers (`LogWriter`) append batches of opaque payloads; readers (`LogSource`) hand the worker entries
with the position to resume after each, and are told to commit once the worker's checkpoint holds them.
"""

from __future__ import annotations

from recdistill.core.samplelog.file import PartitionBusyError, SampleLog, claim_partition
from recdistill.core.samplelog.lease import TrainerLease, open_lease
from recdistill.core.samplelog.source import (
    LogEntry,
    LogLocation,
    LogSource,
    LogWriter,
    open_source,
    open_writer,
)

__all__ = ["LogEntry", "LogLocation", "LogSource", "LogWriter", "PartitionBusyError", "SampleLog", "TrainerLease",
           "claim_partition", "open_lease", "open_source", "open_writer"]
