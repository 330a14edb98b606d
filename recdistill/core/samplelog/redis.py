"""The sample log on Redis Streams (Valkey, or Redis >= 6.2).

- Writers XADD each batch in one pipeline, trimmed with `MAXLEN ~` (retention by length; the oldest
  entries go first). One stream for every server: XADD is atomic, so replicas need no partitions.
- The worker reads through a consumer group (`XREADGROUP`). It acknowledges (`XACK`) an entry only after
  its checkpoint holds it, so an entry read by a worker that died before its checkpoint stays pending.
  A worker that takes over (it holds the trainer lease, `RedisTrainerLease`) first re-reads its own pending
  entries and claims every other consumer's (`XAUTOCLAIM`): nothing read but not trained is lost.
- Delivery is at least once: a re-delivered entry at or before the checkpointed position is marked
  `replayed` (only acknowledged), and a sample id written twice (a writer retrying a batch whose reply it
  lost) is caught by the `seen` marks the worker sets, with a TTL, when it commits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis

from recdistill.core.errors import BrokerUnavailableError
from recdistill.core.samplelog.entry import DEFAULT_GROUP, LogEntry, Position

FIELD = b"p"
# A redis-py error that means "the broker is not reachable now" (not a bug in what we sent).
UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ReadOnlyError)


@dataclass(frozen=True)
class RedisLogConfig:
    """A Redis URL with optional query settings, e.g. `redis://host:6379/0?stream=samples&maxlen=1000000`."""

    url: str
    stream: str = "recdistill:samples"
    group: str = DEFAULT_GROUP
    maxlen: int = 2_000_000  # approximate: entries beyond it are trimmed, oldest first
    seen_ttl_s: int = 7 * 86_400  # how long a committed sample id is remembered for de-duplication
    socket_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        for key, cast in (("stream", str), ("group", str), ("maxlen", int), ("seen_ttl_s", int)):
            if key in query:
                object.__setattr__(self, key, cast(query.pop(key)))
        rest = "&".join(f"{k}={v}" for k, v in query.items())
        object.__setattr__(self, "url", urlunsplit(parts._replace(query=rest)))

    def in_group(self, group: str) -> RedisLogConfig:
        """The same stream read by another consumer group (the URL's `group` is the default one's name)."""
        return self if group == DEFAULT_GROUP else dataclasses.replace(self, group=group)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=self.socket_timeout_s,
                                    socket_connect_timeout=self.socket_timeout_s, health_check_interval=10)

    def seen_key(self, sample_id: str) -> str:
        """Per consumer group: each reader of the stream (the trainer, an offline rerun) de-duplicates alone."""
        return f"{self.stream}:{self.group}:seen:{sample_id}"


def broker_call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, with "the broker is not reachable now" raised as `BrokerUnavailableError`."""
    try:
        return fn(*args, **kwargs)
    except UNAVAILABLE as exc:
        raise BrokerUnavailableError(f"{what} is unavailable: {exc}") from exc


def _id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class RedisStreamWriter:
    def __init__(self, config: RedisLogConfig) -> None:
        self.config = config
        self._client = config.client()

    def append(self, payloads: list[bytes]) -> int:
        """XADD the batch in one round trip; raises `BrokerUnavailableError` when the broker is down (the
        entries of a failed batch may or may not be in: a retry can duplicate, the reader de-duplicates)."""
        pipe = self._client.pipeline(transaction=False)
        for payload in payloads:
            pipe.xadd(self.config.stream, {FIELD: payload}, maxlen=self.config.maxlen, approximate=True)
        broker_call(f"the sample log at {self.config.url}", pipe.execute)
        return len(payloads)

    def close(self) -> None:
        self._client.close()


class RedisStreamScan:
    """Every entry of a stream after a position, read without a consumer group (XRANGE): a reader that keeps
    nothing on the broker, e.g. the label log's, whose readers each rebuild their index from the start."""

    def __init__(self, config: RedisLogConfig) -> None:
        self.config = config
        self._client = config.client()

    def read(self, positions: Mapping[str, Position], max_records: int) -> tuple[list[LogEntry], set[str]]:
        stream = self.config.stream
        start = f"({positions[stream]}" if stream in positions else "-"
        batch = broker_call(f"the log at {self.config.url}", self._client.xrange, stream, min=start,
                            count=max_records)
        entries = [LogEntry(stream, entry_id.decode(), fields.get(FIELD, b"")) for entry_id, fields in batch]
        return entries, {stream} if len(batch) >= max_records else set()

    def close(self) -> None:
        self._client.close()


class RedisStreamSource:
    """The worker's side: a consumer named `consumer` in the group `config.group`."""

    at_least_once = True

    def __init__(self, config: RedisLogConfig, consumer: str) -> None:
        self.config = config
        self.consumer = consumer
        self._client = config.client()
        self._recovered = False  # pending entries (own and other consumers') are taken over once, first
        self._unacked: list[bytes] = []
        self.trimmed = 0  # pending entries trimmed away before this worker could read them (retention)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return broker_call(f"the sample log at {self.config.url}", fn, *args, **kwargs)

    def _ensure_group(self) -> None:
        try:
            self._call(self._client.xgroup_create, self.config.stream, self.config.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _pending(self) -> list[tuple[bytes, dict]]:
        """Every pending entry of the group, claimed by this consumer: its own from before a restart, and a
        dead worker's (a take-over). min_idle_time 0: only the holder of the trainer lease reads, so any
        other consumer's pending entries belong to a worker that lost the lease (dead, or fenced off)."""
        stream, group = self.config.stream, self.config.group
        entries: list[tuple[bytes, dict]] = []
        cursor: bytes | str = "0-0"
        while True:
            cursor, claimed, deleted = self._call(self._client.xautoclaim, stream, group, self.consumer, 0,
                                                  start_id=cursor, count=1_000)
            entries += claimed
            self.trimmed += len(deleted)  # trimmed before anyone trained them (retention); Redis drops them
            if _id(cursor) == (0, 0):
                break
        return sorted(entries, key=lambda e: _id(e[0]))

    def read(self, positions: Mapping[str, Position], max_records: int) -> tuple[list[LogEntry], set[str]]:
        stream = self.config.stream
        last = _id(str(positions[stream])) if stream in positions else (0, -1)
        entries: list[LogEntry] = []
        if not self._recovered:
            self._ensure_group()
            for entry_id, fields in self._pending():
                self._unacked.append(entry_id)
                entries.append(LogEntry(stream, entry_id.decode(), fields.get(FIELD, b""), _id(entry_id) <= last))
            self._recovered = True
        fresh = self._call(self._client.xreadgroup, self.config.group, self.consumer, {stream: ">"},
                           count=max_records)
        batch = list(fresh[0][1]) if fresh else []
        for entry_id, fields in batch:
            self._unacked.append(entry_id)
            entries.append(LogEntry(stream, entry_id.decode(), fields.get(FIELD, b""), _id(entry_id) <= last))
        return entries, {stream} if len(batch) >= max_records else set()

    def seen(self, keys: Sequence[str]) -> list[bool]:
        if not keys:
            return []
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(self.config.seen_key(key))
        return [bool(n) for n in self._call(pipe.execute)]

    def commit(self, positions: Mapping[str, Position], keys: Sequence[str]) -> None:
        """Mark the sample ids, then acknowledge the entries up to the checkpointed position: an entry is
        forgotten by the group only once the checkpoint holds it and its id is remembered, so a later
        duplicate of it is still caught. Entries read after the position stay pending."""
        if self.config.stream not in positions:
            return
        upto = _id(str(positions[self.config.stream]))
        done = [entry_id for entry_id in self._unacked if _id(entry_id) <= upto]
        if not keys and not done:
            return
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.set(self.config.seen_key(key), 1, ex=self.config.seen_ttl_s)
        for start in range(0, len(done), 1_000):
            pipe.xack(self.config.stream, self.config.group, *done[start:start + 1_000])
        self._call(pipe.execute)
        self._unacked = [entry_id for entry_id in self._unacked if _id(entry_id) > upto]

    def committed(self) -> dict[str, Position]:
        return {}

    def close(self) -> None:
        self._client.close()


def group_done(config: RedisLogConfig) -> dict[str, Position]:
    """The last entry id consumer group `config.group` is done with (delivered and acknowledged: before its
    oldest pending entry); {} while the group does not exist."""
    client = config.client()
    try:
        what = f"the log at {config.url}"
        groups = broker_call(what, client.xinfo_groups, config.stream) if broker_call(
            what, client.exists, config.stream) else []
        group = next((g for g in groups if _text(g["name"]) == config.group), None)
        if group is None:
            return {}
        last = _id(group["last-delivered-id"])
        pending = broker_call(what, client.xpending, config.stream, config.group)
        if pending["pending"]:
            ms, seq = _id(pending["min"])
            last = min(last, (ms, seq - 1) if seq else (ms - 1, 2**63))
        return {config.stream: f"{last[0]}-{last[1]}"}
    finally:
        client.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisTrainerLease:
    """One active trainer at a time: a key holding the owner's name with a TTL, renewed every step. A hot
    standby polls `acquire()`; it gets the lease once the active worker stopped renewing it (died)."""

    # Renew our own lease; take it back if nobody holds it (it expired while the broker was down); never
    # take it from another holder.
    _RENEW = "local holder = redis.call('get', KEYS[1]) " \
             "if holder == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end " \
             "if not holder then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end return 0"
    _RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

    def __init__(self, config: RedisLogConfig, owner: str, ttl_s: float = 5.0) -> None:
        self.key = f"{config.stream}:{config.group}:trainer"
        self.owner = owner
        # What the key holds: the owner's name and a token of this lease object, so two processes that share a
        # worker id are still two holders (only one gets it).
        self._token = f"{owner}#{uuid.uuid4().hex[:12]}"
        self.ttl_ms = int(ttl_s * 1000)
        self._client = config.client()

    def acquire(self) -> bool:
        try:
            return bool(self._client.set(self.key, self._token, nx=True, px=self.ttl_ms)) or self.renew()
        except UNAVAILABLE:
            return False

    def renew(self) -> bool:
        """True while this owner still holds the lease (extended); False once it was lost."""
        return bool(broker_call(f"the trainer lease {self.key}", self._client.eval, self._RENEW, 1, self.key,
                                self._token, self.ttl_ms))

    def holder(self) -> str | None:
        """The holder's name (its worker id)."""
        try:
            value = self._client.get(self.key)
        except UNAVAILABLE:
            return None
        return value.decode().rpartition("#")[0] or value.decode() if value else None

    def release(self) -> None:
        with contextlib.suppress(*UNAVAILABLE):  # unreachable: it expires by itself
            self._client.eval(self._RELEASE, 1, self.key, self._token)
        self._client.close()
