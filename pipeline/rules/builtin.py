"""The built-in rules: registered through the entry-point group ``chainwatch.detectors`` in
``pyproject.toml``, exactly as a user's, under their alert type's name.

Each is a :class:`~pipeline.rules.spec.RuleSpec` with today's defaults and an explainer that
reports what an analyst needs to see for that pattern (the buyers of a pump, the burns of a
drain, the ring of a wash). A settings table of the same name re-parameterises or disables
one (``[detectors.wash_trading]`` ``enabled = false``).
"""

from __future__ import annotations

from pipeline.records import DexEvent, Trade
from pipeline.rules.alerting import rounded
from pipeline.rules.rule import Event, Finding, Rule
from pipeline.rules.spec import RuleSpec

PUMP_EVIDENCE = ("order_surge_10", "buy_orders_10", "buy_orders_60", "rush_orders_10",
                 "trades_10", "volume_surge_10", "buy_share_10", "buy_share_60", "return_10",
                 "rise_5m", "rise_30m", "from_high_1h", "volatility_1h", "quote_10", "price",
                 "market_age")
RUG_EVIDENCE = ("liquidity_drop_3", "liquidity_peak_3", "liquidity_weth", "drawdown",
                "price_drop_10", "price_drop_peak", "price_drop_peak_before",
                "liquidity_peak_weth", "return_1", "lp_burns_20", "lp_removed_weth_20", "age",
                "launch_age", "unique_buyers_5", "fresh_buyer_share_5")
WASH_EVIDENCE = ("round_trip_share_20", "two_sided_20", "trades_20", "traders_20",
                 "net_flow_20", "turnover_20", "volume_ratio_20", "return_20", "liquidity_weth")
ANOMALY_EVIDENCE = ("log_value", "novel_value", "novel_fan_out", "value_out_10",
                    "new_recipients_10", "fan_out_10", "sender_txs_10", "sender_age",
                    "sender_idle", "sender_new", "first_send", "recipient_new",
                    "share_of_received", "value_z", "gas_premium")

PUMP_AND_DUMP = RuleSpec(
    name="pump_and_dump", detector="pipeline.detectors:PumpBurst", kind="trades",
    # 0.5: every signal of a path at its target (PumpBurst); at most one alert per market in
    # 100 s of exchange trades, 100 blocks of DEX swaps
    threshold=0.5, cooldown_blocks=100, learn="labels", drift=False, evidence=PUMP_EVIDENCE,
    explain="pipeline.rules.builtin:explain_pump")
RUG_PULL = RuleSpec(
    name="rug_pull", detector="pipeline.detectors:LiquidityDrain", kind="dex",
    # 60 % of the WETH gone within 3 blocks, or a slow dump: the best F1 on the tune half of
    # the uniswap-v2-2021 pools (0.5 to 0.9 tried)
    threshold=0.6, evidence=RUG_EVIDENCE, explain="pipeline.rules.builtin:explain_rug")
WASH_TRADING = RuleSpec(
    name="wash_trading", detector="pipeline.detectors:WashTrading", kind="dex",
    threshold=0.7, evidence=WASH_EVIDENCE, explain="pipeline.rules.builtin:explain_wash")
RUG_RISK = RuleSpec(
    name="rug_risk", detector="pipeline.detectors:PoolRisk", kind="dex",
    threshold=0.77,  # tuned on the tune half: at most 10 % of its never-event pools flagged
    cooldown_blocks=6_500,  # one warning a day per pool
    learn="outcomes", drift=False,  # a model still learning drifts by design
    explain="pipeline.rules.builtin:explain_risk")
ANOMALOUS_TRANSFER = RuleSpec(
    name="anomalous_transfer", detector="pipeline.detectors:TransferAnomaly",
    kind="transactions", quantile=0.9995, window=5_000, warmup=2_000,
    # a strange dust transfer is not worth an analyst's time: the sender moved >= 10**0.6 - 1
    # (about 3) ETH in 10 blocks
    require={"value_out_10": 0.6}, evidence=ANOMALY_EVIDENCE,
    explain="pipeline.rules.builtin:explain_anomaly")


def _dex(event: Event) -> DexEvent:
    assert isinstance(event.record, DexEvent)
    return event.record


def explain_pump(rule: Rule, event: Event, score: float) -> Finding:
    """The trade features behind the burst, the burst rule's own score, the model's
    probability once it has one, and the trade's market and time (in ms)."""
    record = event.record
    if not isinstance(record, Trade):  # a pool-feature pump detector (PumpPhase)
        return explain_pool_pump(rule, event, score)
    evidence = rounded(event.x, rule.spec.evidence) | rule.cut()
    detector = rule.detector
    burst = getattr(detector, "burst", None)
    if callable(burst):
        evidence["burst"] = round(burst(event.x), 6)
    probability = getattr(detector, "probability", None)
    p = probability(event.x) if callable(probability) else None
    if p is not None:
        evidence["pump_probability"] = round(p, 6)
    evidence |= {"venue": record.venue, "market": record.market,
                 "timestamp_ms": record.timestamp}
    if record.pool_address and record.transaction_hash and record.log_index is not None:
        # a DEX swap read as a trade: name the swap's log, the record on chain.dex
        return Finding(evidence, item_ids=[f"log_{record.transaction_hash}_{record.log_index}"])
    return Finding(evidence)


def explain_pool_pump(rule: Rule, event: Event, score: float) -> Finding:
    """The pump's phase and the buys of the last blocks (PumpPhase on pool features)."""
    phase = getattr(rule.detector, "phase", None)
    evidence = rounded(event.x, rule.spec.evidence) | rule.cut()
    if phase is not None:
        evidence["phase"] = phase(event.x)
    return Finding(evidence, item_ids=event.state.short.item_ids(buys_only=True))


def explain_rug(rule: Rule, event: Event, score: float) -> Finding:
    """The LP burns before the drain and the drain itself; the one who took the WETH."""
    ev = _dex(event)
    items = [item for _, _, item in event.state.burns if item != ev.item_id] + [ev.item_id]
    actor = ev.to or ev.sender
    return Finding(rounded(event.x, rule.spec.evidence) | {"kind": ev.kind} | rule.cut(),
                   item_ids=items,
                   addresses=(ev.token0, ev.token1, *([actor] if actor else [])),
                   severity="critical" if score >= 0.9 else "high")


def explain_wash(rule: Rule, event: Event, score: float) -> Finding:
    """The ring: the traders who bought and sold, and their last trades."""
    ev = _dex(event)
    window = event.state.long
    cluster = window.top_traders(two_sided=True)
    members = set(cluster)
    items = [t[4] for t in window.trades if t[1] in members][-64:]
    return Finding(rounded(event.x, rule.spec.evidence) | rule.cut(), item_ids=items,
                   addresses=(ev.token0, ev.token1, *cluster))


def explain_anomaly(rule: Rule, event: Event, score: float) -> Finding:
    """Medium when value moved through a wallet never seen before, else low."""
    return Finding(rounded(event.x, rule.spec.evidence) | rule.cut(),
                   severity="medium" if event.x.get("novel_value", 0.0) >= 1.0 else "low")


def explain_risk(rule: Rule, event: Event, score: float) -> Finding:
    """The features that pushed the risk up most (see PoolRisk.contributions), with their
    values."""
    terms = getattr(rule.detector, "contributions", None)
    top = dict(list(terms(event.x).items())[:5]) if callable(terms) else {}
    evidence = {"risk": round(score, 6),
                "top_features": {k: round(v, 4) for k, v in top.items()},
                "features": rounded(event.x, tuple(top))} | rule.cut()
    return Finding(evidence, severity="high" if score >= 0.98 else "medium")
