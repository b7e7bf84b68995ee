"""Trade features, the PumpBurst detector and trade scoring: a burst on an exchange market is
flagged during the rush, labels teach only what was scored before them (prequential), and
the state round-trips."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pipeline import state
from pipeline.detectors import PumpBurst
from pipeline.features.trades import MarketState, TradeFeatures, _hour_high, _note_high
from pipeline.records import Label, Trade
from pipeline.rules import RuleSet
from pipeline.scoring import Scorer
from pipeline.scoring.trades import LABEL_SOURCE, TradeScoring

T0 = 1_600_000_000_000  # ms
PUMP_AT = T0 + 6 * 3_600_000  # six hours of quiet trading, then the announcement


def _trade(ms: int, side: str = "buy", price: float = 1.0, stream: str = "P1",
           quote: float = 0.01) -> Trade:
    return Trade(venue="binance", market="ABC/BTC", side=side, price=price, amount=quote / price,
                 quote_volume=quote, timestamp=ms, stream=stream)


def _market(stream: str = "P1", seed: int = 1) -> list[Trade]:
    """Six hours of a trade every ~40 s around a flat price, with a flurry of 18 buys lifting
    it 7 % two hours before the end (a candidate the rule does not alert on), then a pump:
    300 buy orders in 30 s (every third filled twice in one millisecond) lifting the price
    40 %, then a dump."""
    rng = random.Random(seed)
    trades, ms, price = [], T0, 1.0
    flurry = PUMP_AT - 2 * 3_600_000
    while ms < PUMP_AT:
        price *= 1 + rng.uniform(-0.004, 0.004)
        trades.append(_trade(ms, rng.choice(("buy", "sell")), price, stream))
        if ms < flurry <= ms + 60_000:
            for i in range(18):
                trades.append(_trade(ms + 1 + 250 * i, "buy", price * (1 + 0.07 * i / 17),
                                     stream))
            ms += 5_000
        ms += rng.randint(20_000, 60_000)
    base = price
    for i in range(300):
        at = PUMP_AT + 1_000 + i * 100
        price = base * (1 + 0.4 * i / 300)
        trades.append(_trade(at, "buy", price, stream, quote=0.05))
        if i % 3 == 0:
            trades.append(_trade(at, "buy", price, stream, quote=0.05))  # a second fill
    for i in range(100):
        trades.append(_trade(PUMP_AT + 40_000 + i * 500, "sell", price * (1 - i / 200), stream))
    return trades


def test_rush_orders_surge_and_rise_during_a_pump() -> None:
    features = TradeFeatures()
    xs = [(t, features.update(t)) for t in _market()]
    quiet = [x for t, x in xs if t.timestamp < PUMP_AT]
    rush = [x for t, x in xs if PUMP_AT + 10_000 <= t.timestamp < PUMP_AT + 30_000]
    assert max(x["order_surge_10"] for x in quiet) < 20
    assert min(x["order_surge_10"] for x in rush) > 20
    assert max(x["rush_orders_10"] for x in quiet) == 0
    assert min(x["rush_orders_10"] for x in rush) >= 20  # every third order filled twice
    assert rush[-1]["rise_30m"] > 0.2 and rush[-1]["from_high_1h"] >= 0.0  # a new high
    assert all(0.0 <= x["buy_share_10"] <= 1.0 for _, x in xs)


def test_the_hour_high_is_the_brute_force_maximum() -> None:
    rng, st, seen, ms = random.Random(1), MarketState(0), [], T0
    for _ in range(5_000):
        ms += rng.choice([5, 1_000, 30_000, 120_000]) * rng.choice([1, 1, 1, -1])  # some late
        price = rng.random()
        minute = ms // 60_000
        newest = max((m for m, _ in seen), default=minute)
        want = max((p for m, p in seen if m > minute - 60), default=0.0) \
            if minute >= newest else None
        got = _hour_high(st, ms)
        if want is not None:
            assert got == want
        _note_high(st, ms, price)
        seen.append((max(minute, newest), price))
    assert len(st.highs) <= 61


def test_pump_burst_needs_every_signal_of_a_path_and_an_old_enough_market() -> None:
    rush = {"order_surge_10": 40.0, "rise_30m": 0.10, "buy_share_10": 0.9, "market_age": 4.0}
    detector = PumpBurst()
    assert detector.score_one(rush) > 0.5
    for weak in ({"order_surge_10": 5.0}, {"rise_30m": 0.01}, {"buy_share_10": 0.3}):
        assert detector.score_one(rush | weak) < 0.5
    assert detector.score_one(rush | {"market_age": 2.0}) == 0.0  # 99 s old: launch hype
    run_up = {"rise_5m": 0.5, "buy_share_60": 0.95, "buy_orders_60": 15.0, "market_age": 4.0}
    assert detector.score_one(run_up) > 0.5
    assert detector.score_one(run_up | {"buy_orders_60": 4.0}) < 0.5


def _scoring() -> TradeScoring:
    return TradeScoring(RuleSet.load())


def _source(offset: int) -> dict[str, Any]:
    return {"topic": "market.trades", "partition": 0, "offset": offset}


def test_an_exchange_pump_alerts_during_the_rush_before_the_peak() -> None:
    scoring = _scoring()
    alerts = [a for i, t in enumerate(_market()) for a in scoring.process(t, _source(i))]
    assert len(alerts) == 1, [a.evidence for a in alerts]
    alert = alerts[0]
    assert alert.type == "pump_and_dump" and alert.subject == "P1"
    at = alert.evidence["timestamp_ms"]
    assert PUMP_AT < at < PUMP_AT + 1_000 + 300 * 100  # during the rush, before its top
    assert alert.evidence["market"] == "ABC/BTC" and alert.evidence["burst"] >= 0.5


def _label(stream: str = "P1", released: int = PUMP_AT // 1000 + 3600) -> Label:
    return Label(subject=stream, label=1, source=LABEL_SOURCE, block_number=PUMP_AT // 1000,
                 released_block=released, partition_key=stream)


def test_a_label_is_learnt_only_once_released_and_only_for_what_was_scored_before() -> None:
    scoring = _scoring()
    rule = scoring.learners[0]
    scored: list[dict[str, float]] = []
    learnt: list[tuple[dict[str, float], int]] = []
    detector = rule.detector
    score_one, learn_one = detector.score_one, detector.learn_one

    def spy_score(x: dict[str, float]) -> float:
        scored.append(dict(x))
        return float(score_one(x))

    def spy_learn(x: dict[str, float], y: int | None = None) -> None:
        learnt.append((dict(x), int(y or 0)))
        learn_one(x, y)

    detector.score_one = spy_score  # type: ignore[method-assign]
    detector.learn_one = spy_learn  # type: ignore[method-assign]
    trades = _market()
    scoring.learn_label(_label())  # read long before its release: it waits
    release_ms = (PUMP_AT // 1000 + 3600) * 1000
    for i, trade in enumerate(trades):
        scoring.process(trade, _source(i))
    assert not learnt and scoring.learnt == 0  # the stream never reached the release second
    scored_before = len(scored)
    scoring.process(_trade(release_ms + 5, "sell", 1.0), _source(len(trades)))
    assert learnt, "the label is applied once the trades reach its release second"
    assert {y for _, y in learnt} == {0, 1}  # lead-in candidates 0, the pump's minutes 1
    assert all(x in scored[:scored_before] for x, _ in learnt)  # each scored before learnt
    count = len(learnt)
    scoring.learn_label(_label())  # the same pump's label again (a resumed replay)
    scoring.process(_trade(release_ms + 10, "buy", 1.0), _source(len(trades) + 1))
    assert len(learnt) == count


def test_scorer_routes_pump_labels_to_trades_and_the_state_round_trips() -> None:
    trades = [*_market("P1"), _trade(PUMP_AT + 4_000_000, stream="P1")]
    half = len(trades) // 2
    first = Scorer()
    for i, t in enumerate(trades[:half]):
        first.process(t, _source(i))
    first.process(_label(released=PUMP_AT // 1000 + 60), _source(0))
    assert first.trades.labels == 1 and first.transactions.labels == 0
    restored = Scorer()
    restored.load_state(state.decode(state.encode(first.state())))
    rest = trades[half:]
    a = [x.to_json() for i, t in enumerate(rest) for x in first.process(t, _source(i))]
    b = [x.to_json() for i, t in enumerate(rest) for x in restored.process(t, _source(i))]
    assert a == b and a
    assert first.trades.learnt == restored.trades.learnt > 0


def test_damaged_trade_state_is_refused() -> None:
    scoring = _scoring()
    for i, t in enumerate(_market()[:50]):
        scoring.process(t, _source(i))
    saved = scoring.state()
    saved["counts"] = ["x"]
    with pytest.raises(state.StateError):
        _scoring().load_state(saved)
