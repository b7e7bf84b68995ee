"""The planner's outbox: batches, checkpoints in order, and Kafka's own partitioning."""

from __future__ import annotations

import random
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.future import Future
from kafka.partitioner.default import DefaultPartitioner

from producers.handoff import Outbox, SendFailed, _Failures, _send_batch


class Channel:
    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []

    def put(self, item: tuple[str, Any]) -> None:
        self.items.append(item)


class Cluster:
    """The two methods of kafka-python's ClusterMetadata the default partitioner calls."""

    def __init__(self, count: int) -> None:
        self.count = count

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.count))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.count))


def test_partitions_match_kafka_pythons_default_partitioner() -> None:
    rng = random.Random(3)
    for count in (1, 3, 4, 12):
        channel = Channel()
        outbox = Outbox(channel, {"t": count}, batch=10_000)
        keys = [f"0x{rng.getrandbits(160):040x}".encode() for _ in range(500)]
        for key in keys:
            outbox.send("t", value=b"v", key=key)
        outbox.flush()
        (_, batch), = channel.items
        expected = [DefaultPartitioner().partition("t", k, k, b"v", b"v", Cluster(count))
                    for k in keys]
        assert [p for _, _, _, p in batch] == expected


def test_batches_flush_before_each_checkpoint() -> None:
    channel = Channel()
    outbox = Outbox(channel, {}, batch=3)
    for i in range(4):
        outbox.send("t", value=str(i).encode(), key=None)
    outbox.checkpoint("pos-4")
    outbox.send("t", value=b"4")
    outbox.checkpoint("pos-5")
    assert [kind for kind, _ in channel.items] == ["batch", "batch", "checkpoint", "batch",
                                                   "checkpoint"]
    sent = [v for kind, batch in channel.items if kind == "batch" for _, _, v, _ in batch]
    assert sent == [b"0", b"1", b"2", b"3", b"4"]
    assert channel.items[2] == ("checkpoint", "pos-4")
    assert all(p is None for kind, b in channel.items if kind == "batch" for *_, p in b)


class _FailingProducer:
    """Every send's future fails, as kafka-python reports a refused or timed-out delivery."""

    def send(self, topic: str, value: bytes, key: bytes | None, partition: int | None) -> Future:
        future = Future()
        future.failure(KafkaTimeoutError("delivery timed out"))
        return future


def test_a_failed_send_stops_the_run_before_the_cursor_moves() -> None:
    failures = _Failures()
    _send_batch(_FailingProducer(), [("chain.dex", b"k", b"v", 0)] * 3, "chainwatch.dlq",
                "producer", failures)
    with pytest.raises(SendFailed, match=r"3 records could not be sent .*run again to resume"):
        failures.check()
    _Failures().check()  # nothing failed: nothing raised
