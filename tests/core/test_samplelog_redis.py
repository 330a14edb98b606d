"""The sample log on Redis Streams, against a real Valkey server: consumer group delivery, acknowledgement
only on commit, take-over of a dead worker's pending entries, sample-id marks, the trainer lease, and a
broker that is down."""

from __future__ import annotations

import pytest
import redis

from recdistill.core.errors import BrokerUnavailableError
from recdistill.core.samplelog import LogLocation, open_source, open_writer
from recdistill.core.samplelog.redis import RedisLogConfig, RedisStreamSource, RedisStreamWriter, RedisTrainerLease
from recdistill.demo.valkey import LocalValkey


def test_locations_parse_and_bad_ones_are_named() -> None:
    assert LogLocation.parse("samples") == LogLocation("file", "samples")
    assert LogLocation.parse("file:/var/log/x").directory.as_posix() == "/var/log/x"
    assert LogLocation.parse("redis://h:6379/2").kind == "redis"
    with pytest.raises(Exception, match="file:DIR or redis://"):
        LogLocation.parse("kafka://broker:9092")
    config = RedisLogConfig("redis://h:6379/0?stream=s1&maxlen=10")
    assert (config.stream, config.maxlen, config.url) == ("s1", 10, "redis://h:6379/0")


def test_entries_are_acknowledged_only_when_committed_and_a_new_worker_takes_over_the_rest(
    valkey: LocalValkey,
) -> None:
    writer, where, lock = open_writer(LogLocation.parse(valkey.url), "server-a")
    assert lock is None
    assert "recdistill:samples" in where
    assert writer.append([f"r{i}".encode() for i in range(10)]) == 10
    config = RedisLogConfig(valkey.url)
    client = redis.Redis.from_url(valkey.url)

    first = open_source(LogLocation.parse(valkey.url), "worker-1")
    entries, behind = first.read({}, max_records=6)
    assert [e.payload for e in entries] == [f"r{i}".encode() for i in range(6)]
    assert behind == {config.stream}
    assert not any(e.replayed for e in entries)
    # The checkpoint holds the first 4 only: the entries after it stay pending.
    checkpointed = {config.stream: entries[3].position}
    first.commit(checkpointed, ["r0", "r1", "r2", "r3"])
    assert client.xpending(config.stream, config.group)["pending"] == 2
    second_batch, _ = first.read(checkpointed, max_records=2)
    assert [e.payload for e in second_batch] == [b"r6", b"r7"]
    assert client.xpending(config.stream, config.group)["pending"] == 4  # worker-1 dies here

    # The standby restores the checkpoint (after r3), claims worker-1's pending r4-r7 in order, then reads on.
    standby = RedisStreamSource(config, "worker-2")
    taken, _ = standby.read(checkpointed, max_records=100)
    assert [e.payload for e in taken] == [f"r{i}".encode() for i in range(4, 10)]
    assert not any(e.replayed for e in taken)
    standby.commit({config.stream: taken[-1].position}, [e.payload.decode() for e in taken])
    assert client.xpending(config.stream, config.group)["pending"] == 0
    assert standby.seen(["r1", "r9", "never"]) == [True, True, False]
    assert client.ttl(config.seen_key("r9")) > 86_400


def test_a_redelivered_entry_the_checkpoint_holds_is_marked_replayed(valkey: LocalValkey) -> None:
    config = RedisLogConfig(valkey.url)
    RedisStreamWriter(config).append([b"a", b"b", b"c"])
    crashed = RedisStreamSource(config, "w1")
    entries, _ = crashed.read({}, 10)
    # Checkpointed after b, but killed before the commit: all three stay pending.
    restarted = RedisStreamSource(config, "w1")
    again, _ = restarted.read({config.stream: entries[1].position}, 10)
    assert [(e.payload, e.replayed) for e in again] == [(b"a", True), (b"b", True), (b"c", False)]


def test_the_trainer_lease_has_one_holder_and_passes_on_when_it_expires(valkey: LocalValkey) -> None:
    config = RedisLogConfig(valkey.url)
    active, standby = RedisTrainerLease(config, "w1", ttl_s=0.3), RedisTrainerLease(config, "w2", ttl_s=0.3)
    assert active.acquire()
    assert not standby.acquire()
    assert active.renew()
    assert standby.holder() == "w1"
    redis.Redis.from_url(valkey.url).pexpire(active.key, 1)  # w1 stops renewing (dies): the lease expires
    while redis.Redis.from_url(valkey.url).exists(active.key):
        pass
    assert standby.acquire()
    assert not active.renew(), "the old holder learns it lost the lease"
    standby.release()
    assert standby.holder() is None
    # A lease that expired while nobody else took it (the broker was down longer than its TTL) is taken back.
    assert active.renew()
    assert standby.holder() == "w1"
    # Two processes started with the same worker id are two holders: only one gets the lease (both did).
    twin = RedisTrainerLease(config, "w1", ttl_s=0.3)
    assert not twin.acquire()
    assert not twin.renew()
    assert active.renew()


def test_a_broker_that_is_down_is_an_unavailable_error_not_a_crash(valkey: LocalValkey) -> None:
    config = RedisLogConfig(valkey.url)
    writer, source = RedisStreamWriter(config), RedisStreamSource(config, "w1")
    writer.append([b"x"])
    valkey.stop()
    with pytest.raises(BrokerUnavailableError):
        writer.append([b"y"])
    with pytest.raises(BrokerUnavailableError):
        source.read({}, 10)
    assert not RedisTrainerLease(config, "w1").acquire()
    valkey.start()
    writer.append([b"y"])
    entries, _ = source.read({}, 10)
    assert [e.payload for e in entries] == [b"x", b"y"], "the append-only file kept what was written"
