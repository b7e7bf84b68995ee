"""Poison pills against a real broker: a service survives any record, and its dead letter fits.

kafka-python's producer refuses a message over ``max_request_size`` (1 MiB by default). A
dead letter that carried a large record whole, base64-encoded, went over it and stopped the
scorer or the auditor, on every restart. The large records here are produced with a
producer allowed bigger requests (the broker takes them), as another client could.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from consumers.auditor import AuditorService
from consumers.scorer import ScorerService
from pipeline.alerts import Alert
from pipeline.dlq import TRUNCATED_HEAD_BYTES, decode_letter
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from producers.sink import KafkaSink
from producers.synth import SynthConfig, SyntheticChain
from tests.conftest import consume_all

pytestmark = pytest.mark.integration

FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}
BIG_REQUESTS = {"max_request_size": 8 * 1024 * 1024}
KAFKA_MAX_REQUEST = 1_048_576


def _transaction(**changes: Any) -> bytes:
    tx = {"type": "transaction", "hash": "0x" + "ab" * 32, "nonce": 0, "block_number": 7,
          "block_timestamp": 84, "transaction_index": 0, "from_address": "0x" + "11" * 20,
          "to_address": "0x" + "22" * 20, "value": "1", "gas": 21000, "gas_price": "1",
          "input": "0x"}
    return orjson.dumps({k: v for k, v in (tx | changes).items() if v is not None})


def _send(producer: KafkaProducer, topic: str, value: bytes) -> dict[str, Any]:
    """Send ``value`` and return its source (topic, partition, offset)."""
    meta = producer.send(topic, value=value, key=b"poison").get(timeout=30)
    return {"topic": topic, "partition": meta.partition, "offset": meta.offset}


def _check_letters(letters: list[dict[str, Any]], sizes: list[int],
                   poison: dict[int, tuple[bytes, str]]) -> None:
    """Each poison record's letter (by offset) fits, and names the record exactly."""
    assert all(size < KAFKA_MAX_REQUEST // 8 for size in sizes)
    by_offset = {letter["source"]["offset"]: letter for letter in letters}
    for offset, (original, reason) in poison.items():
        letter = by_offset[offset]
        assert letter["reason"] == reason
        assert letter["original_size"] == len(original)
        assert letter["original_sha256"] == hashlib.sha256(original).hexdigest()
        if len(original) > 64 * 1024:
            assert letter["original_truncated"] is True
            assert letter["original"] == original[:TRUNCATED_HEAD_BYTES]
        else:
            assert letter["original"] == original


def test_the_scorer_survives_records_of_a_megabyte_and_more(
        settings: Settings, producer_factory: Callable[..., KafkaProducer],
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    ensure_topics(settings)
    topics = settings.topics
    chain = SyntheticChain(SynthConfig(seed=21, blocks=60))
    with KafkaSink(settings) as sink:
        for block in chain.blocks():
            for record in (*block.transactions, *block.dex_events):
                sink.write(record)
        produced = sink.produced
    big = producer_factory(**BIG_REQUESTS)
    poison = {
        # 1.5 MB: over the record limit
        "oversized": _transaction(input="0x" + "ab" * 750_000),
        # 0.8 MB and invalid: its letter, with the whole record, was over 1 MiB
        "missing_field": _transaction(hash=None, input="0x" + "cd" * 400_000),
        # valid-looking, at a block that used to poison per-address state
        "bad_value": _transaction(block_number=2**64 - 1),
    }
    sources = {reason: _send(big, topics.transactions, value)
               for reason, value in poison.items()}
    label = orjson.dumps({"type": "label", "subject": "s" * 900_000, "label": 1,
                          "source": "analyst", "block_number": 1, "released_block": 2})
    sources["too_long"] = _send(big, topics.labels, label)
    poison["too_long"] = label
    big.flush()

    stats = ScorerService(settings, **FAST_GROUP).run(input_finished=lambda: True)

    assert stats.consumed == produced + len(poison)
    assert stats.dead_lettered == len(poison)
    messages = consume_all(consumer_factory(topics.dlq), len(poison))
    letters = [decode_letter(m.value) for m in messages]
    assert sorted(letter["reason"] for letter in letters) == sorted(poison)
    for letter in letters:
        assert letter["source"] == sources[letter["reason"]]
    by_topic: dict[str, dict[int, tuple[bytes, str]]] = {}
    for reason, value in poison.items():
        src = sources[reason]
        by_topic.setdefault(src["topic"], {})[src["offset"]] = (value, reason)
    for topic, expected in by_topic.items():
        _check_letters([x for x in letters if x["source"]["topic"] == topic],
                       [len(m.value) for m in messages], expected)
    alerts = consume_all(consumer_factory(topics.alerts), sum(stats.alerts_by_type.values()))
    assert [Alert.from_json(m.value).type for m in alerts].count("pump_and_dump") == \
        stats.alerts_by_type["pump_and_dump"]


def test_the_auditor_survives_records_of_a_megabyte_and_more(
        settings: Settings, tmp_path: Path, producer_factory: Callable[..., KafkaProducer],
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    audited = settings.replace(audit__store=str(tmp_path / "audit" / "audit.db"))
    ensure_topics(audited)
    topic = audited.topics.alerts
    big = producer_factory(**BIG_REQUESTS)
    alerts = [Alert.build(type="rug_pull", severity="high", score=0.9,
                          subject=f"0x{i:040x}", detector="liquidity_drain",
                          model_version="1", evidence={"drop": 0.95},
                          source={"topic": "chain.dex", "partition": 0, "offset": i,
                                  "item_ids": [f"log_{i}"]}, event_time=i, detected_at=i)
              for i in range(5)]
    for alert in alerts[:3]:
        big.send(topic, value=alert.to_json(), key=alert.subject.encode())
    huge = b"{" + b"x" * 1_500_000  # 1.5 MB, not JSON
    large = orjson.dumps({"alert_id": "a" * 800_000})  # 0.8 MB, not an alert
    poison: dict[int, tuple[bytes, str]] = {}
    for value in (huge, large):
        src = _send(big, topic, value)
        poison[src["offset"]] = (value, "")
    for alert in alerts[3:]:
        big.send(topic, value=alert.to_json(), key=alert.subject.encode())
    big.flush()

    stats = AuditorService(audited).run(input_finished=lambda: True)

    assert (stats.consumed, stats.appended, stats.dead_lettered) == (7, 5, 2)
    messages = consume_all(consumer_factory(audited.topics.dlq), 2)
    letters = [decode_letter(m.value) for m in messages]
    assert all(letter["stage"] == "auditor" and letter["source"]["topic"] == topic
               for letter in letters)
    reasons = {letter["source"]["offset"]: letter["reason"] for letter in letters}
    _check_letters(letters, [len(m.value) for m in messages],
                   {offset: (value, reasons[offset]) for offset, (value, _) in poison.items()})
