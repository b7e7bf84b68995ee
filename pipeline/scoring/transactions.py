"""Scoring of one partition's transactions topic: the rules on kind ``transactions`` (by
default the anomalous-transfer rule), drift on their scores, and the supervised model that
learns from delayed labels.

Alerts depend only on the order of the transactions and token transfers given here. Labels
train the supervised model, which raises no alert, so the order in which labels interleave
with transactions changes scores used for evaluation, never an alert.

Labels are applied in *stream time*: the service reads the labels topic alongside the
transactions, so a label often arrives before the transaction stream has reached its
``released_block`` (in a fast replay, before its transaction was even scored). Such a label
waits (at most ``MAX_WAITING_LABELS``) and is applied just before the first transaction at
or past its release block, as it would be live.
"""

from __future__ import annotations

import heapq
from typing import Any

from pipeline import codec
from pipeline.alerts import Alert
from pipeline.detectors import DelayedLabelModel, ScoreDrift
from pipeline.features import AddressFeatures
from pipeline.records import Label, TokenTransfer, Transaction
from pipeline.rules import Event, Rule, RuleSet
from pipeline.scoring.common import DriftWatch, load_rules_state, rules_state
from pipeline.state import StateError, fields

MAX_WAITING_LABELS = 200_000


class TransactionScoring:
    """Address features, the ``transactions`` rules of ``rules``, and the supervised
    delayed-label model."""

    def __init__(self, rules: RuleSet, seed: int = 42) -> None:
        self.seed = seed
        self.features = AddressFeatures()
        self.rules: list[Rule] = rules.build("transactions", seed)
        # no age limit on items awaiting a label, only the count (max_pending): in a replay the
        # labels topic may be read long after the transactions, and a label must still match
        self.supervised = DelayedLabelModel(seed=seed, max_delay_blocks=2**62)
        self.drift = DriftWatch(tuple(r.name for r in self.rules if r.spec.drift))
        self.supervised_drift = ScoreDrift()  # a metric only: labels make it order-dependent
        self.events = 0
        self.labels = 0
        self.alerts: dict[str, int] = {}
        self.stream_block = 0  # the newest block of the transaction stream
        self.waiting: list[tuple[int, int, Label]] = []  # labels not yet due, by release
        self.labels_dropped = 0

    def process(self, record: Transaction | TokenTransfer, source: dict[str, Any]) -> list[Alert]:
        self.events += 1
        if isinstance(record, TokenTransfer):
            self.features.update_transfer(record)
            return []
        tx = record
        block = tx.block_number
        if block > self.stream_block:
            self.stream_block = block
            while self.waiting and self.waiting[0][0] <= block:
                self._apply_label(heapq.heappop(self.waiting)[2])
        alerts: list[Alert] = []
        drifted = self.drift.advance(block)
        item_id = tx.item_id
        if drifted:
            alerts += self.drift.drift_alerts(drifted, item_id, source, block,
                                              tx.block_timestamp)
        x = self.features.update(tx)
        event = Event(tx, x, self.features, tx.from_address, source)
        for rule in self.rules:
            score, alert = rule.apply(event)
            if rule.spec.drift and rule.warm:
                self.drift.add(rule.name, score)
            if alert is not None:
                alerts.append(alert)

        self.supervised.remember(item_id, block, x)  # scored now, learned when labelled
        for alert in alerts:
            self.alerts[alert.type] = self.alerts.get(alert.type, 0) + 1
        return alerts

    def learn_label(self, label: Label) -> None:
        """Apply ``label`` now if the stream has reached its release block, else later."""
        self.labels += 1
        if label.released_block <= self.stream_block:
            self._apply_label(label)
            return
        heapq.heappush(self.waiting, (label.released_block, self.labels, label))
        if len(self.waiting) > MAX_WAITING_LABELS:  # bounded: drop the latest-due one
            self.waiting.remove(max(self.waiting))
            heapq.heapify(self.waiting)
            self.labels_dropped += 1

    def _apply_label(self, label: Label) -> None:
        """Train the supervised model on the item ``label.subject`` if it is still pending;
        the item's event-time score feeds the model's drift monitor (a metric only)."""
        model = self.supervised
        if model.learn_label(label.subject, label.label, label.released_block) and \
                model.last_test is not None:
            self.supervised_drift.learn_one({"score": model.last_test[0]})

    def state(self) -> dict[str, Any]:
        """Features, rules, drift, the supervised model and the labels not yet due (as their
        wire encoding, validated again on load)."""
        return {"v": 1, "features": self.features.state(), "rules": rules_state(self.rules),
                "drift": self.drift.state(), "supervised": self.supervised.state(),
                "supervised_drift": self.supervised_drift.state(),
                "counts": [self.events, self.labels, self.stream_block, self.labels_dropped],
                "alerts": self.alerts,
                "waiting": [[due, seq, codec.encode(label)] for due, seq, label in self.waiting]}

    def load_state(self, state: dict[str, Any]) -> list[str]:
        fields(state, "transaction scoring", 1, features=dict, rules=dict, drift=dict,
               supervised=dict, supervised_drift=dict, counts=list, alerts=dict, waiting=list)
        self.features.load_state(state["features"])
        notes = load_rules_state(self.rules, state["rules"])
        self.drift.load_state(state["drift"])
        self.supervised.load_state(state["supervised"])
        self.supervised_drift.load_state(state["supervised_drift"])
        self.events, self.labels, self.stream_block, self.labels_dropped = state["counts"]
        self.alerts = dict(state["alerts"])
        waiting = []
        for due, seq, raw in state["waiting"]:
            label = codec.decode(raw)
            if not isinstance(label, Label):
                raise StateError("transaction scoring state: a waiting label is a "
                                 f"{label.record_type}")
            waiting.append((int(due), int(seq), label))
        heapq.heapify(waiting)
        self.waiting = waiting
        return notes

    def metrics(self) -> dict[str, float]:
        feats, model = self.features, self.supervised
        out: dict[str, float] = {
            "transaction_events": float(self.events),
            "addresses_tracked": float(len(feats.addresses)),
            "evictions_addresses": float(feats.addresses.evictions),
            "labels": float(self.labels),
            "labels_waiting": float(len(self.waiting)),
            "labels_dropped": float(self.labels_dropped),
            "labels_learned": float(model.learned),
            "labels_unmatched": float(model.unmatched),
            "labels_pending": float(len(model.pending)),
            "evictions_pending_labels": float(model.expired),
            f"drifts_{model.name}": float(self.supervised_drift.drifts),
        }
        for name, count in self.drift.drifts.items():
            out[f"drifts_{name}"] = float(count)
        for rule in self.rules:
            out[f"rule_errors_{rule.name}"] = float(rule.errors)
        return out
