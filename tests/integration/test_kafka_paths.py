"""Produce and consume through the real broker: topics, keys, the DLQ."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kafka import KafkaConsumer

from pipeline import codec
from pipeline.dlq import DeadLetterWriter, decode_letter
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from producers.sink import KafkaSink
from producers.synth import SynthConfig, SyntheticChain
from tests.conftest import consume_all

pytestmark = pytest.mark.integration


def test_ensure_topics_is_idempotent(settings: Settings) -> None:
    first = ensure_topics(settings)
    assert set(first.values()) == {"created"}
    assert set(ensure_topics(settings).values()) == {"exists"}
    assert set(first) == set(settings.topics.all().values())


def test_sink_keys_records_for_locality(settings: Settings,
                                        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    ensure_topics(settings)
    chain = SyntheticChain(SynthConfig(seed=11, blocks=20))
    records = [r for b in chain.blocks() for r in (*b.transactions, *b.dex_events)]
    with KafkaSink(settings) as sink:
        for r in records:
            sink.write(r)
    consumer = consumer_factory(settings.topics.transactions, settings.topics.dex)
    got = consume_all(consumer, len(records))
    assert len(got) == len(records)
    partition_of_key: dict[bytes, int] = {}
    for msg in got:
        record = codec.decode(msg.value)
        assert msg.key == record.key.encode()
        assert partition_of_key.setdefault(msg.key, msg.partition) == msg.partition
    assert {codec.decode(m.value).item_id for m in got} == {r.item_id for r in records}


def test_dead_letter_keeps_original_bytes_reason_and_source(
        settings: Settings, producer_factory: Callable[..., object],
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    ensure_topics(settings)
    producer = producer_factory()
    dlq = DeadLetterWriter(producer, settings.topics.dlq, stage="test")  # type: ignore[arg-type]
    raw = b'{"type": "transaction", "value": "-1"}'
    dlq.write(raw, "negative_amount", "field 'value': must not be negative",
              {"file": "x.csv", "line": 7})
    producer.flush()  # type: ignore[attr-defined]
    got = consume_all(consumer_factory(settings.topics.dlq), 1)
    letter = decode_letter(got[0].value)
    assert letter["original"] == raw
    assert letter["reason"] == "negative_amount"
    assert letter["source"] == {"file": "x.csv", "line": 7}
    assert letter["stage"] == "test"
    assert dlq.count == 1
