"""Scoring of one partition's DEX stream: the rules on kind ``dex``, and drift on their scores.

Everything here depends only on the order of the DEX events it is given, never on the
transactions topic, so its alerts are the same however the service interleaves topics.
"""

from __future__ import annotations

from typing import Any

from pipeline.alerts import Alert
from pipeline.features import PoolFeatures
from pipeline.features.trades import trade_from_swap
from pipeline.records import DexEvent
from pipeline.rules import Event, Rule, RuleSet
from pipeline.scoring.common import DriftWatch, load_rules_state, rules_state
from pipeline.scoring.outcomes import PoolOutcomes
from pipeline.scoring.trades import TradeScoring
from pipeline.state import fields


class DexScoring:
    """Pool features, and the ``dex`` rules of ``rules`` (by default the built-ins: rug
    pull, rug risk, wash trading) scoring them; swaps also go, as trades of their pool, to
    the ``trades`` rules (pump-and-dump) of a :class:`TradeScoring` of their own."""

    def __init__(self, rules: RuleSet, seed: int = 42) -> None:
        self.seed = seed
        self.features = PoolFeatures()
        self.rules: list[Rule] = rules.build("dex", seed)
        # rules that learn from pools' delayed outcomes, and the outcomes they learn from
        self.outcome_rules = [r for r in self.rules if r.spec.learn == "outcomes"]
        self.outcomes = PoolOutcomes() if self.outcome_rules else None
        self.drift = DriftWatch(tuple(r.name for r in self.rules if r.spec.drift))
        self.trades = TradeScoring(rules, seed)
        self.events = 0
        self.alerts: dict[str, int] = {}

    def process(self, ev: DexEvent, source: dict[str, Any]) -> list[Alert]:
        self.events += 1
        block = ev.block_number
        alerts: list[Alert] = []
        drift = self.drift
        drifted = drift.advance(block)
        if drifted:
            alerts += drift.drift_alerts(drifted, ev.item_id, source, block,
                                         ev.block_timestamp)
        st, x = self.features.update_state(ev)
        if self.outcomes is not None:  # labels due by this event, learnt before it is scored
            for snapshot, y in self.outcomes.observe(ev.pool_address, block, x):
                for rule in self.outcome_rules:
                    rule.learn_outcome(snapshot, y)
        event = Event(ev, x, st, ev.pool_address, source)
        for rule in self.rules:
            score, alert = rule.apply(event)
            if rule.spec.drift and rule.warm:
                drift.add(rule.name, score)
            if alert is not None:
                alerts.append(alert)
        if ev.kind == "swap" and st.has_weth and self.trades.rules:
            trade = trade_from_swap(ev, st.weth_is_0)
            if trade is not None:
                alerts += self.trades.process(trade, source, subject=ev.pool_address)
        for alert in alerts:
            self.alerts[alert.type] = self.alerts.get(alert.type, 0) + 1
        return alerts

    def state(self) -> dict[str, Any]:
        return {"v": 2, "features": self.features.state(), "rules": rules_state(self.rules),
                "drift": self.drift.state(), "events": self.events, "alerts": self.alerts,
                "outcomes": self.outcomes.state() if self.outcomes is not None else None,
                "trades": self.trades.state()}

    def load_state(self, state: dict[str, Any]) -> list[str]:
        fields(state, "dex scoring", 2, features=dict, rules=dict, drift=dict, events=int,
               alerts=dict, outcomes=(dict, type(None)), trades=dict)
        self.features.load_state(state["features"])
        if self.outcomes is not None and state["outcomes"] is not None:
            self.outcomes.load_state(state["outcomes"])
        notes = load_rules_state(self.rules, state["rules"])
        notes += self.trades.load_state(state["trades"])
        self.drift.load_state(state["drift"])
        self.events, self.alerts = state["events"], dict(state["alerts"])
        return notes

    def metrics(self) -> dict[str, float]:
        feats = self.features
        out: dict[str, float] = {
            "dex_events": float(self.events),
            "pools_tracked": float(len(feats.pools)),
            "dex_wallets_tracked": float(len(feats.wallets)),
            "evictions_pools": float(feats.pools.evictions),
            "evictions_dex_wallets": float(feats.wallets.evictions),
        }
        out |= self.trades.metrics("dex_trade")
        if self.outcomes is not None:
            o = self.outcomes
            out |= {"outcome_snapshots": float(o.count), "outcomes_drained": float(o.positives),
                    "outcomes_survived": float(o.negatives),
                    "evictions_outcome_snapshots": float(o.dropped)}
        for name, count in self.drift.drifts.items():
            out[f"drifts_{name}"] = float(count)
        for rule in self.rules:
            out[f"rule_errors_{rule.name}"] = float(rule.errors)
        return out
