"""Scoring of one partition's DEX stream: pump-and-dump, rug pull, wash trading, drift.

Everything here depends only on the order of the DEX events it is given, never on the
transactions topic, so its alerts are the same however the service interleaves topics.
"""

from __future__ import annotations

from typing import Any

from pipeline.alerts import Alert
from pipeline.detectors import LiquidityDrain, PumpPhase, ThresholdFilter, WashTrading
from pipeline.features import PoolFeatures, PoolState
from pipeline.records import DexEvent
from pipeline.scoring.common import DriftWatch, build_alert, rounded

PUMP_EVIDENCE = ("return_1", "return_3", "return_5", "return_10", "unique_buyers_5",
                 "buyer_hhi_5", "fresh_buyer_share_5", "imbalance_5", "buys_5", "sells_5",
                 "buy_weth_5", "price_drop_10", "price", "liquidity_weth", "age", "launch_age")
RUG_EVIDENCE = ("liquidity_drop_3", "liquidity_peak_3", "liquidity_weth", "drawdown",
                "price_drop_10",
                "return_1", "lp_burns_20", "lp_removed_weth_20", "age", "launch_age",
                "unique_buyers_5", "fresh_buyer_share_5")
WASH_EVIDENCE = ("round_trip_share_20", "two_sided_20", "trades_20", "traders_20",
                 "net_flow_20", "turnover_20", "volume_ratio_20", "return_20", "liquidity_weth")


class DexScoring:
    """Pool features and the DEX detectors, each behind its threshold filter."""

    def __init__(self, seed: int = 42) -> None:
        self.seed = seed
        self.features = PoolFeatures()
        self.pump = PumpPhase()
        self.pump_filter = ThresholdFilter(threshold=0.6, cooldown_blocks=100)
        self.rug = LiquidityDrain()
        self.rug_filter = ThresholdFilter(threshold=0.5, cooldown_blocks=100)
        self.wash = WashTrading()
        self.wash_filter = ThresholdFilter(threshold=0.7, cooldown_blocks=100)
        self.drift = DriftWatch((self.pump.name, self.rug.name, self.wash.name))
        self.events = 0
        self.alerts: dict[str, int] = {}

    def process(self, ev: DexEvent, source: dict[str, Any]) -> list[Alert]:
        self.events += 1
        block = ev.block_number
        alerts: list[Alert] = []
        drifted = self.drift.advance(block)
        if drifted:
            alerts += self.drift.drift_alerts(drifted, ev.item_id, source, block,
                                              ev.block_timestamp)
        st, x = self.features.update_state(ev)
        pool = ev.pool_address
        drift = self.drift

        score = self.pump.score_one(x)
        drift.add(self.pump.name, score)
        if score and self.pump_filter.decide(pool, score, block):
            alerts.append(self._pump_alert(ev, st, x, score, source))

        score = self.rug.score_one(x)
        drift.add(self.rug.name, score)
        if score and self.rug_filter.decide(pool, score, block):
            alerts.append(self._rug_alert(ev, st, x, score, source))

        score = self.wash.score_one(x)
        drift.add(self.wash.name, score)
        if score and self.wash_filter.decide(pool, score, block):
            alerts.append(self._wash_alert(ev, st, x, score, source))

        for alert in alerts:
            self.alerts[alert.type] = self.alerts.get(alert.type, 0) + 1
        return alerts

    def _pump_alert(self, ev: DexEvent, st: PoolState, x: dict[str, float], score: float,
                    source: dict[str, Any]) -> Alert:
        pump, f = self.pump, self.pump_filter
        evidence: dict[str, Any] = rounded(x, PUMP_EVIDENCE) | {
            "phase": pump.phase(x), "threshold": f.threshold,
            "thresholds": {"min_return": pump.min_return, "min_buyers": pump.min_buyers,
                           "min_effective_buyers": pump.min_effective_buyers,
                           "min_fresh_share": pump.min_fresh_share,
                           "max_pullback": pump.max_pullback}}
        return build_alert(type="pump_and_dump", score=score, subject=ev.pool_address,
                           detector=pump, evidence=evidence, source=source,
                           item_ids=st.short.item_ids(buys_only=True), block=ev.block_number,
                           timestamp=ev.block_timestamp, addresses=(ev.token0, ev.token1))

    def _rug_alert(self, ev: DexEvent, st: PoolState, x: dict[str, float], score: float,
                   source: dict[str, Any]) -> Alert:
        rug = self.rug
        evidence: dict[str, Any] = rounded(x, RUG_EVIDENCE) | {
            "kind": ev.kind,
            "threshold": self.rug_filter.threshold,
            "thresholds": {"min_liquidity_weth": rug.min_liquidity_weth}}
        items = [item for _, _, item in st.burns if item != ev.item_id] + [ev.item_id]
        actor = ev.to or ev.sender
        return build_alert(type="rug_pull", score=score, subject=ev.pool_address,
                           detector=rug, evidence=evidence, source=source, item_ids=items,
                           block=ev.block_number, timestamp=ev.block_timestamp,
                           addresses=(ev.token0, ev.token1, *([actor] if actor else [])),
                           level="critical" if score >= 0.9 else "high")

    def _wash_alert(self, ev: DexEvent, st: PoolState, x: dict[str, float], score: float,
                    source: dict[str, Any]) -> Alert:
        wash = self.wash
        cluster = st.long.top_traders(two_sided=True)
        members = set(cluster)
        items = [t[4] for t in st.long.trades if t[1] in members][-64:]
        evidence: dict[str, Any] = rounded(x, WASH_EVIDENCE) | {
            "threshold": self.wash_filter.threshold,
            "thresholds": {"min_round_trip": wash.min_round_trip,
                           "full_round_trip": wash.full_round_trip,
                           "min_two_sided": wash.min_two_sided, "min_trades": wash.min_trades}}
        return build_alert(type="wash_trading", score=score, subject=ev.pool_address,
                           detector=wash, evidence=evidence, source=source, item_ids=items,
                           block=ev.block_number, timestamp=ev.block_timestamp,
                           addresses=(ev.token0, ev.token1, *cluster))

    def metrics(self) -> dict[str, float]:
        feats = self.features
        out: dict[str, float] = {
            "dex_events": float(self.events),
            "pools_tracked": float(len(feats.pools)),
            "dex_wallets_tracked": float(len(feats.wallets)),
            "evictions_pools": float(feats.pools.evictions),
            "evictions_dex_wallets": float(feats.wallets.evictions),
        }
        for name, count in self.drift.drifts.items():
            out[f"drifts_{name}"] = float(count)
        return out
