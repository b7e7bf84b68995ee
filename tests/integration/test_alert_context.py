"""The records around an alert, read back from a real broker by the alert sink.

Two pools' events, a market's trades and an address's transactions go to their topics, each
subject's records on one partition among others'; alerts point at records in the middle of
them. The sink stores every alert and, beside it, its context: exactly the subject's records
within the window around the alert's offset (``alerts.context_records`` before, a tenth as
many after), in offset order, with the price, liquidity and flow each record gives.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.partitioner.default import murmur2

from consumers.alert_sink import AlertSinkService
from pipeline import alert_context
from pipeline.alert_store import AlertStore
from pipeline.alerts import Alert
from pipeline.codec import decode
from pipeline.features.pools import WETH
from pipeline.records import DexEvent, Trade, Transaction
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.alert_backends import alert_store_url
from tests.conftest import consume_all
from tests.helpers import write_records

__all__ = ["alert_store_url"]

pytestmark = pytest.mark.integration
BEFORE = 40  # records before the alert's offset; 4 after
POOL = "0x" + "a1" * 20


def _same_partition(key: str, partitions: int) -> str:
    """A pool address whose records land on ``key``'s partition (kafka-python's default
    partitioner), so that the window around an alert holds another subject's records."""
    def pick(k: str) -> int:
        return (murmur2(k.encode()) & 0x7FFFFFFF) % partitions

    return next(c for c in (f"0x{i:040x}" for i in range(1, 1000)) if pick(c) == pick(key))


TOKEN = "0x" + "c3" * 20
ALICE, BOB = "0x" + "d4" * 20, "0x" + "e5" * 20


def _pool_event(pool: str, i: int) -> DexEvent:
    buy = i % 3 != 0
    return DexEvent(pool_address=pool, token0=TOKEN, token1=WETH, kind="swap",
                    block_number=100 + i, block_timestamp=1_600_000_000 + 12 * i,
                    transaction_hash=f"0x{i:064x}", log_index=1 if pool == POOL else 2,
                    amount0_in=0 if buy else 10**18, amount1_in=10**17 * (i + 1) if buy else 0,
                    amount0_out=10**18 if buy else 0, amount1_out=0 if buy else 10**16 * (i + 1),
                    reserve0=(1000 - i) * 10**18, reserve1=(50 + i) * 10**18, to=ALICE)


def _records(other: str) -> list[DexEvent | Trade | Transaction]:
    out: list[DexEvent | Trade | Transaction] = []
    for i in range(120):
        out += [_pool_event(POOL, i), _pool_event(other, i)]
        out.append(Trade(venue="binance", market="PUMP/BTC", side="buy" if i % 2 else "sell",
                         price=1e-6 * (1 + i / 100), amount=100.0, quote_volume=1e-4 * (i + 1),
                         timestamp=1_600_000_000_000 + 1000 * i, trade_id=str(i)))
        out.append(Transaction(hash=f"0x{i + 10**6:064x}", nonce=i, block_number=100 + i,
                               block_timestamp=1_600_000_000 + 12 * i, transaction_index=0,
                               from_address=ALICE if i % 2 else BOB,
                               to_address=BOB if i % 2 else ALICE, value=10**18 * (i % 5),
                               gas=21_000, gas_price=10**9))
    return out


def _expected(record: object, offset: int) -> alert_context.Sample:
    if isinstance(record, DexEvent):
        buy = record.amount1_in > 0
        weth = (record.amount1_in if buy else record.amount1_out) / 1e18
        return alert_context.Sample(float(record.block_timestamp), offset, record.item_id,
                                    price=record.reserve1 / record.reserve0,
                                    liquidity=record.reserve1 / 1e18,
                                    flow_in=weth if buy else 0.0, flow_out=0.0 if buy else weth)
    if isinstance(record, Trade):
        buy = record.side == "buy"
        return alert_context.Sample(record.timestamp / 1000, offset, record.item_id,
                                    price=record.price, flow_in=record.quote_volume if buy else 0,
                                    flow_out=0.0 if buy else record.quote_volume)
    assert isinstance(record, Transaction)
    ether = record.value / 1e18
    return alert_context.Sample(float(record.block_timestamp), offset, record.item_id,
                                flow_in=ether if record.to_address == ALICE else 0.0,
                                flow_out=ether if record.from_address == ALICE else 0.0)


def test_the_sink_keeps_each_alerts_records_around_it(
        settings: Settings, alert_store_url: str, tmp_path: Path,
        producer_factory: Callable[..., KafkaProducer],
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    run = settings.replace(alerts__store=alert_store_url, alerts__context_records=BEFORE)
    ensure_topics(run)
    records = _records(other := _same_partition(POOL, run.partitions.dex))
    write_records(run, records)  # type: ignore[arg-type]
    topics = (run.topics.dex, run.topics.trades, run.topics.transactions)
    consumer = consumer_factory(*topics)
    on_kafka = consume_all(consumer, len(records))
    assert len(on_kafka) == len(records)
    by_partition: dict[tuple[str, int], list[tuple[int, object]]] = {}
    for msg in on_kafka:
        by_partition.setdefault((msg.topic, msg.partition), []).append(
            (msg.offset, decode(msg.value)))

    def located(topic: str, about: Callable[[object], bool]) -> tuple[int, int, list[tuple[
            int, object]]]:
        """The partition holding most of ``about``'s records, the offset of the middle one
        and all that partition's records."""
        (p, mine), recs = max(((tp[1], [o for o, r in rs if about(r)]), sorted(rs))
                              for tp, rs in by_partition.items() if tp[0] == topic)
        assert len(mine) > BEFORE
        return p, mine[len(mine) // 2], recs

    cases = {  # subject, addresses, topic, which records are about it
        "pool": (POOL, (TOKEN, WETH), run.topics.dex,
                 lambda r: isinstance(r, DexEvent) and r.pool_address == POOL),
        "market": ("binance:PUMP/BTC", (), run.topics.trades, lambda r: isinstance(r, Trade)),
        "address": (ALICE, (), run.topics.transactions,
                    lambda r: isinstance(r, Transaction) and ALICE in (r.from_address,
                                                                      r.to_address)),
    }
    alerts: dict[str, tuple[Alert, list[alert_context.Sample]]] = {}
    for kind, (subject, addresses, topic, about) in cases.items():
        partition, offset, recs = located(topic, about)
        alert = Alert.build(type="rug_pull", severity="high", score=0.9, subject=subject,
                            addresses=addresses, detector="test", model_version="1",
                            evidence={}, source={"topic": topic, "partition": partition,
                                                 "offset": offset, "item_ids": [kind]},
                            event_time=1_600_000_000, detected_at=1_600_000_000)
        window = [(o, r) for o, r in recs if offset - BEFORE <= o <= offset + BEFORE // 10]
        alerts[kind] = (alert, [_expected(r, o) for o, r in window if about(r)])
        if kind == "pool":  # the other pool's records were in the window, and are left out
            assert any(isinstance(r, DexEvent) and r.pool_address == other for _, r in window)
    producer = producer_factory()
    for alert, _ in alerts.values():
        producer.send(run.topics.alerts, value=alert.to_json(), key=alert.subject.encode())
    producer.flush()

    AlertSinkService(run, context_drain_s=30).run(input_finished=lambda: True)

    with AlertStore.open(alert_store_url, create=False) as store:
        assert store.count() == 3
        for kind, (alert, expected) in alerts.items():
            ctx = alert_context.load(store, alert.alert_id)
            assert ctx is not None, kind
            assert ctx.kind == kind
            assert expected and ctx.samples == tuple(expected), kind
            assert ctx.first_offset <= expected[0].offset and \
                ctx.last_offset >= expected[-1].offset
        assert alert_context.missing(store, [a.alert_id for a, _ in alerts.values()]) == []


def test_an_alert_whose_source_is_gone_gets_no_context(
        settings: Settings, tmp_path: Path,
        producer_factory: Callable[..., KafkaProducer]) -> None:
    run = settings.replace(alerts__store=str(tmp_path / "alerts.db"))
    ensure_topics(run)
    alert = Alert.build(type="rug_pull", severity="high", score=0.9, subject=POOL,
                        detector="test", model_version="1", evidence={},
                        source={"topic": "no-such-topic", "partition": 0, "offset": 5,
                                "item_ids": ["x"]}, event_time=1, detected_at=1)
    producer = producer_factory()
    producer.send(run.topics.alerts, value=alert.to_json(), key=b"k")
    producer.flush()
    stats = AlertSinkService(run, context_drain_s=30).run(input_finished=lambda: True)
    assert stats.stored == 1
    with AlertStore.open(run.alerts.store, create=False) as store:
        assert alert_context.load(store, alert.alert_id) is None
        assert alert_context.missing(store, [alert.alert_id]) == [alert.alert_id]
