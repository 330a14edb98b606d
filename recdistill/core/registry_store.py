"""Where the active-version pointer lives, for one server or a fleet.

- `FileStateStore` (the default): `state.json` in the registry directory; every process polls it.
- `RedisStateStore`: the pointer in Redis / Valkey under one key, with a pub/sub notification on each
  change, so every replica (any number, on any machine) stages and swaps within about a second of an
  activation made through any replica's operator API or the CLI. Each replica also reports what it
  serves (`ReplicaStatus`), which `GET /admin/versions` shows. The model artifacts stay on a shared path
  (a volume in Kubernetes); each replica checks a version's sha256 before loading it.

Every change is a compare-and-set (`update`): the change is applied to the state as it is at that moment
and written only if nobody wrote in between (a lock file across the processes that share state.json;
WATCH/MULTI on Redis, retried when another replica wrote first), so concurrent operator actions never
lose one another. The state's rules (`RegistryState`) are checked inside, on that same state.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec
import redis
import redis.asyncio

from recdistill.core.artifact import decode_versioned, read_state, write_state
from recdistill.core.contracts.admin import ReplicaEntry
from recdistill.core.contracts.registry import (
    REPLICA_FORMAT,
    STATE_FORMAT,
    RegistryState,
    ReplicaStatus,
    to_json,
)
from recdistill.core.places import REGISTRY_KEY_PREFIX, ScenarioPlace
from recdistill.core.samplelog.redis import broker_call

STALE_AFTER_S = 15.0  # a replica that has not reported for this long is shown as stale


class StateStore(Protocol):
    shared: bool  # True: other machines see the same pointer

    def read(self) -> RegistryState: ...

    def update(self, change: Callable[[RegistryState], RegistryState]) -> RegistryState:
        """Apply `change` to the current state atomically (compare-and-set); the new state. `change` may
        raise (a rule the state refuses): nothing is written then."""
        ...

    def report(self, status: ReplicaStatus) -> None: ...

    def replicas(self) -> list[ReplicaEntry]: ...

    def notifications(self) -> AsyncIterator[str] | None: ...

    def close(self) -> None: ...


class FileStateStore:
    shared = False

    def __init__(self, registry: Path) -> None:
        self.registry = registry
        self._me: ReplicaStatus | None = None

    def read(self) -> RegistryState:
        return read_state(self.registry)

    def update(self, change: Callable[[RegistryState], RegistryState]) -> RegistryState:
        # flock: held by an open file, so it serialises every process (and thread) that shares the directory.
        descriptor = os.open(self.registry / ".state.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            state = read_state(self.registry)
            changed = change(state)
            if changed != state:
                changed = changed.next_revision()
                write_state(self.registry, changed)
            return changed
        finally:
            os.close(descriptor)  # releases the lock

    def report(self, status: ReplicaStatus) -> None:
        self._me = status

    def replicas(self) -> list[ReplicaEntry]:
        return [] if self._me is None else [ReplicaEntry(**msgspec.structs.asdict(self._me), stale=False)]

    def notifications(self) -> None:
        return None  # processes poll state.json

    def close(self) -> None:
        pass


class RedisStateStore:
    shared = True

    def __init__(self, url: str, prefix: str = REGISTRY_KEY_PREFIX, seed_from: Path | None = None) -> None:
        self.url = url
        self.key, self.channel, self.replicas_key = f"{prefix}:state", f"{prefix}:activated", f"{prefix}:replicas"
        self._client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        if seed_from is not None:  # a fleet adopting a store starts from the registry's own pointer
            local = read_state(seed_from)
            if local.active:
                self._call(self._client.set, self.key, to_json(local), nx=True)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return broker_call(f"the registry store at {self.url}", fn, *args, **kwargs)

    def read(self) -> RegistryState:
        return self._decode(self._call(self._client.get, self.key))

    def _decode(self, data: bytes | None) -> RegistryState:
        return RegistryState() if data is None else decode_versioned(data, RegistryState, STATE_FORMAT,
                                                                      f"{self.key}: registry state")

    def update(self, change: Callable[[RegistryState], RegistryState]) -> RegistryState:
        result: list[RegistryState] = []

        def attempt(pipe: redis.client.Pipeline) -> None:  # rerun by redis-py when the WATCHed key changed
            result.clear()
            state = self._decode(pipe.get(self.key))
            changed = change(state)
            pipe.multi()
            if changed != state:
                changed = changed.next_revision()
                pipe.set(self.key, to_json(changed))
                pipe.publish(self.channel, changed.active or "")
            result.append(changed)

        self._call(self._client.transaction, attempt, self.key)
        return result[0]

    def report(self, status: ReplicaStatus) -> None:
        self._call(self._client.hset, self.replicas_key, status.replica, msgspec.json.encode(status))

    def replicas(self) -> list[ReplicaEntry]:
        now, out = time.time(), []
        for raw in self._call(self._client.hgetall, self.replicas_key).values():
            try:
                status = decode_versioned(raw, ReplicaStatus, REPLICA_FORMAT, "replica status")
            except Exception:  # noqa: BLE001 - one bad entry does not hide the others
                continue
            out.append(ReplicaEntry(**msgspec.structs.asdict(status), stale=now - status.updated_unix > STALE_AFTER_S))
        return sorted(out, key=lambda r: r.replica)

    async def notifications(self) -> AsyncIterator[str]:  # type: ignore[override]
        """Each activation's version as it is published (raises when the connection drops)."""
        client = redis.asyncio.Redis.from_url(self.url, socket_connect_timeout=2.0)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    data = message["data"]
                    yield data.decode() if isinstance(data, bytes) else str(data)
        finally:
            await pubsub.aclose()
            await client.aclose()

    def close(self) -> None:
        self._client.close()


def open_state_store(root: Path, url: str | None, place: ScenarioPlace) -> StateStore:
    """The scenario's registry folder's state.json, or with `url` (redis://...) the fleet's shared pointer
    under the scenario's own key prefix."""
    registry = place.registry(root)
    if not url:
        return FileStateStore(registry)
    return RedisStateStore(url, prefix=place.store_prefix, seed_from=registry)
