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
    for store in ("pools", "addresses", "dex_trade_markets"):  # swaps as trades too
        assert (REGISTRY.get_sample_value("chainwatch_feature_keys", {"store": store}) or 0) > 0
    assert REGISTRY.get_sample_value("chainwatch_model_drifts",
                                     {"detector": "rug_pull"}) is not None
    assert REGISTRY.get_sample_value("chainwatch_rule_errors", {"rule": "wash_trading"}) == 0


def test_exchange_trades_alert_a_pump_and_bad_trades_are_dead_lettered(
        settings: Settings, consumer_factory: Callable[..., KafkaConsumer]) -> None:
    """Trades on market.trades, as a replay writes them: the pump alerts during its rush, a
    pump label read before its release waits for it, and malformed trades (a negative
    amount, a side that is not buy or sell, a zero price, another record type) go to the
    dead-letter topic with their reason while the rest are scored."""
    import orjson

    from pipeline import codec
    from pipeline.records import Label
    from tests.unit.test_trade_scoring import PUMP_AT, _market

    ensure_topics(settings)
    trades = _market("P9")
    good = codec.to_wire_dict(trades[0])
    bad = [(good | {"amount": -1.0}, "negative_amount"), (good | {"side": "hold"}, "bad_value"),
           (good | {"price": 0.0}, "bad_value"), (good | {"type": "dex_event"}, "bad_value")]
    with KafkaSink(settings) as sink:
        sink.write(Label(subject="P9", label=1, source="pumps", block_number=PUMP_AT // 1000,
                         released_block=PUMP_AT // 1000 + 3600, partition_key="P9"))
        for trade in trades:
            sink.write(trade)
        for raw, _ in bad:
            sink.producer.send(settings.topics.trades, value=orjson.dumps(raw),
                               key=b"binance:ABC/BTC")
    service = ScorerService(settings, **FAST_GROUP)
    stats = service.run(input_finished=lambda: True)
    assert stats.consumed == len(trades) + 1 + len(bad)
    assert stats.dead_lettered == len(bad)
    letters = [decode_letter(m.value) for m in
               consume_all(consumer_factory(settings.topics.dlq), len(bad))]
    assert sorted(letter["reason"] for letter in letters) == sorted(r for _, r in bad)
    assert all(letter["source"]["topic"] == settings.topics.trades for letter in letters)
    alerts = [Alert.from_json(m.value) for m in consume_all(
        consumer_factory(settings.topics.alerts), sum(stats.alerts_by_type.values()))]
    pumps = [a for a in alerts if a.type == "pump_and_dump"]
    assert [a.subject for a in pumps] == ["P9"]
    assert PUMP_AT < pumps[0].evidence["timestamp_ms"] < PUMP_AT + 31_000
    assert pumps[0].source["topic"] == settings.topics.trades
