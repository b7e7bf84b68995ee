"""Lag from the high-water mark: snapshots, the gauge, revoked partitions' series.

A stand-in consumer answers ``assignment``, ``highwater`` and ``position`` like kafka-python;
tests/integration/test_observability.py reads the same numbers from a real broker.
"""

from __future__ import annotations

import pytest
from kafka import TopicPartition
from prometheus_client import CollectorRegistry, Gauge

from pipeline.lag import ConsumerHealth, LagMonitor, LagSnapshot


class FakeConsumer:
    def __init__(self) -> None:
        self.high: dict[TopicPartition, int | None] = {}
        self.pos: dict[TopicPartition, int] = {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.high)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.high[tp]

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int:
        assert timeout_ms == 0, "the monitor must never block on a position lookup"
        return self.pos[tp]


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def gauge(registry: CollectorRegistry) -> Gauge:
    return Gauge("chainwatch_consumer_lag", "lag", ["topic", "partition"], registry=registry)


def lag_of(registry: CollectorRegistry, topic: str, partition: int) -> float | None:
    return registry.get_sample_value("chainwatch_consumer_lag",
                                     {"topic": topic, "partition": str(partition)})


def test_lag_is_highwater_minus_position_per_partition(
        gauge: Gauge, registry: CollectorRegistry) -> None:
    consumer = FakeConsumer()
    a, b, c = TopicPartition("chain.dex", 0), TopicPartition("chain.dex", 1), \
        TopicPartition("chain.transactions", 0)
    consumer.high = {a: 120, b: 40, c: None}  # c: not fetched yet
    consumer.pos = {a: 100, b: 40, c: 0}
    snap = LagMonitor(gauge).update(consumer)
    assert dict(snap.lags) == {("chain.dex", 0): 20, ("chain.dex", 1): 0,
                               ("chain.transactions", 0): None}
    assert (lag_of(registry, "chain.dex", 0), lag_of(registry, "chain.dex", 1)) == (20, 0)
    assert lag_of(registry, "chain.transactions", 0) is None  # no series until it is known
    assert snap.readiness() == (False, "1 of 3 partitions not fetched yet")


def test_updates_at_most_every_interval(gauge: Gauge, registry: CollectorRegistry) -> None:
    consumer, clock = FakeConsumer(), Clock()
    tp = TopicPartition("t", 0)
    consumer.high, consumer.pos = {tp: 10}, {tp: 0}
    monitor = LagMonitor(gauge, interval_s=1.0, clock=clock)
    first = monitor.update(consumer)
    consumer.pos[tp] = 10
    clock.now += 0.5
    assert monitor.update(consumer) is first
    assert lag_of(registry, "t", 0) == 10
    assert monitor.update(consumer, force=True).lags[("t", 0)] == 0
    clock.now += 1.0
    consumer.pos[tp] = 4
    assert monitor.update(consumer).lags[("t", 0)] == 6


def test_revoked_partitions_lose_their_series(gauge: Gauge, registry: CollectorRegistry) -> None:
    consumer = FakeConsumer()
    keep, revoked, later = TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("t", 2)
    consumer.high = {keep: 5, revoked: 7, later: 9}
    consumer.pos = {keep: 5, revoked: 0, later: 0}
    monitor = LagMonitor(gauge)
    monitor.update(consumer)
    monitor.forget([revoked])  # from the rebalance listener: at once
    assert lag_of(registry, "t", 1) is None
    assert ("t", 1) not in monitor.snapshot.lags
    del consumer.high[later]  # gone from the assignment: removed at the next update
    monitor.update(consumer, force=True)
    assert lag_of(registry, "t", 2) is None
    assert lag_of(registry, "t", 0) == 0
    monitor.close()
    assert lag_of(registry, "t", 0) is None
    assert not monitor.snapshot.assigned


def test_snapshot_readiness_reasons() -> None:
    assert LagSnapshot().readiness() == (False, "no partitions assigned yet")
    snap = LagSnapshot({("a", 0): 999, ("a", 1): 1001})
    assert snap.readiness(max_lag=1000) == (
        False, "a[1] is 1001 records behind (more than 1000)")
    assert snap.readiness(max_lag=2000) == (True, "2 partitions assigned, 2000 records behind")
    with pytest.raises(TypeError):
        snap.lags[("a", 0)] = 0  # type: ignore[index]  # read-only for other threads


def test_consumer_health_publishes_readiness_from_the_lag() -> None:
    consumer, clock = FakeConsumer(), Clock()
    health = ConsumerHealth(ready_max_lag=10, clock=clock)
    health.lag = LagMonitor(Gauge("lag_x", "x", ["topic", "partition"],
                                  registry=CollectorRegistry()), clock=clock)
    assert health.ready() == (False, "starting")
    health.observe(consumer)
    assert health.ready() == (False, "no partitions assigned yet")
    tp = TopicPartition("t", 0)
    consumer.high, consumer.pos = {tp: 100}, {tp: 95}
    clock.now += 1
    health.observe(consumer)
    assert health.ready() == (True, "1 partition assigned, 5 records behind")
    clock.now += 500  # no beat since: stalled, so neither alive nor ready
    assert health.alive()[0] is False
    assert health.ready()[0] is False
    health.close()
    assert health.lag.snapshot.lags == {}
