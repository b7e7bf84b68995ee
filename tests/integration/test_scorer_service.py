"""The scorer service against the real broker: alerts out, bad records to the DLQ."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kafka import KafkaConsumer

from consumers.scorer import ScorerService
from pipeline.alerts import Alert
from pipeline.dlq import decode_letter
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from producers.sink import KafkaSink
from producers.synth import SynthConfig, SyntheticChain
from tests.conftest import consume_all

pytestmark = pytest.mark.integration

FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}


def test_scores_stream_alerts_pump_and_dead_letters_bad_input(
        settings: Settings, consumer_factory: Callable[..., KafkaConsumer]) -> None:
    ensure_topics(settings)
    chain = SyntheticChain(SynthConfig(seed=21, blocks=200))
    bad = [b"not json", b'{"type": "transaction", "nonce": 1}', b"[]"]
    with KafkaSink(settings) as sink:
        produced = 0
        for block in chain.blocks():
            for record in (*block.transactions, *block.dex_events):
                sink.write(record)
                produced += 1
        for raw in bad:
            sink.producer.send(settings.topics.transactions, value=raw, key=b"bad")
    service = ScorerService(settings, **FAST_GROUP)
    stats = service.run(input_finished=lambda: True)

    assert stats.consumed == produced + len(bad)
    assert stats.dead_lettered == len(bad)
    assert stats.scored == produced

    letters = [decode_letter(m.value) for m in
               consume_all(consumer_factory(settings.topics.dlq), len(bad))]
    assert sorted(letter["original"] for letter in letters) == sorted(bad)
    assert {letter["reason"] for letter in letters} == {"not_json", "missing_field", "bad_type"}
    assert all(letter["source"]["topic"] == settings.topics.transactions for letter in letters)

    alerts = [Alert.from_json(m.value) for m in consume_all(
        consumer_factory(settings.topics.alerts), sum(stats.alerts_by_type.values()))]
    truth = chain.truth[0]
    pumps = [a for a in alerts if a.type == "pump_and_dump"]
    assert [a.subject for a in pumps] == [truth["subject"]]
    phases = truth["phases"]
    assert phases["pump"] <= pumps[0].labels["block_number"] < phases["dump"]


def test_restart_resumes_from_committed_offsets(settings: Settings) -> None:
    ensure_topics(settings)
    chain = SyntheticChain(SynthConfig(seed=3, blocks=40))
    blocks = list(chain.blocks())
    half = len(blocks) // 2
    with KafkaSink(settings) as sink:
        for block in blocks[:half]:
            for record in (*block.transactions, *block.dex_events):
                sink.write(record)
    first = ScorerService(settings, **FAST_GROUP).run(input_finished=lambda: True)
    with KafkaSink(settings) as sink:
        for block in blocks[half:]:
            for record in (*block.transactions, *block.dex_events):
                sink.write(record)
    second = ScorerService(settings, **FAST_GROUP).run(input_finished=lambda: True)
    total = sum(len(b.transactions) + len(b.dex_events) for b in blocks)
    assert first.consumed + second.consumed == total
    assert second.consumed == total - first.consumed > 0


def test_scorer_state_is_exported_as_metrics(settings: Settings) -> None:
    from prometheus_client import REGISTRY

    ensure_topics(settings)
    with KafkaSink(settings) as sink:
        for block in SyntheticChain(SynthConfig(seed=8, blocks=60)).blocks():
            for record in [*block.transactions, *block.dex_events]:
                sink.write(record)
    ScorerService(settings, **FAST_GROUP).run(input_finished=lambda: True)
    for store in ("pools", "addresses"):
        assert (REGISTRY.get_sample_value("chainwatch_feature_keys", {"store": store}) or 0) > 0
    assert REGISTRY.get_sample_value("chainwatch_model_drifts",
                                     {"detector": "pump_and_dump"}) is not None
    assert REGISTRY.get_sample_value("chainwatch_rule_errors", {"rule": "wash_trading"}) == 0
