"""What every long-running worker job shares (the stream trainer, the labeller): the lease that makes one
process at a time do the job (the others wait as hot standbys), and the dead-letter files, one line shape
(`DeadLetter`) for every record a job sets aside."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from recdistill.core.contracts.worker import DeadLetter
from recdistill.core.errors import RecDistillError
from recdistill.core.samplelog import TrainerLease

logger = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()


@dataclass
class LeaseLostError(RecDistillError):
    """Another worker holds the lease: this one must stop."""


async def acquire_lease(lease: TrainerLease, until: Callable[[], bool]) -> bool:
    """Wait as a hot standby until the lease is free (the active worker stopped renewing it); False when
    `until()` came first."""
    waited = False
    while not await asyncio.to_thread(lease.acquire):
        if until():
            return False
        if not waited:
            logger.info("worker %s is a hot standby: %s holds the lease", lease.owner, lease.holder())
            waited = True
        await asyncio.sleep(min(1.0, lease.ttl_ms / 5_000))
    logger.info("worker %s holds the lease", lease.owner)
    return True


class DeadLetterFile:
    """A dead-letter file (JSON lines, `DeadLetter`): `write(payload, reason, request_id)` sets a record aside."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, payload: bytes, reason: str, request_id: str = "") -> None:
        line = DeadLetter(reason=reason, dead_lettered_unix=time.time(), request_id=request_id,
                          record_msgpack_b64=base64.b64encode(payload).decode())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            handle.write(_encoder.encode(line) + b"\n")
        logger.warning("set aside %s: %s", request_id or "a record", reason)


def dead_letter_file(path: Path) -> Callable[[bytes, str], None]:
    """`(payload, reason)` writer of a dead-letter file (the label stores' and the labeller's)."""
    return DeadLetterFile(path).write
