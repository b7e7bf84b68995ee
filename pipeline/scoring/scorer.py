"""The scoring logic of one partition's worth of state, free of Kafka.

:class:`Scorer` takes validated records in order and returns the alerts they trigger. The
service (:mod:`consumers.scorer`) feeds it from Kafka, one Scorer per partition, and
checkpoints it whole with :mod:`pickle`; tests and the evaluator feed it directly.

Guarantees the service relies on:

* deterministic: the same records in the same order give byte-identical alerts
  (:meth:`~pipeline.alerts.Alert.to_json`), and a Scorer pickled after record *k* and
  restored gives, from record *k + 1* on, the alerts the uninterrupted one gives;
* per-topic independence: DEX alerts depend only on the order of DEX events, transaction
  alerts only on that of transactions and token transfers (see :mod:`pipeline.scoring`), so
  however the service interleaves the topics of a partition, the alerts are the same;
* labels train the supervised model and never raise an alert;
* bounded memory: at most 100k addresses (~0.8 kB each), 100k DEX traders, 20k pools and
  100k transactions awaiting a label per Scorer, idle keys evicted after 50k blocks; the
  evictions are counted in :meth:`Scorer.metrics`.

>>> from producers.synth import SynthConfig, SyntheticChain
>>> scorer, alerts = Scorer(seed=1), []
>>> chain = SyntheticChain(SynthConfig(seed=21, blocks=120))
>>> for block in chain.blocks():
...     for record in (*block.transactions, *block.dex_events):
...         alerts += scorer.process(record, {"topic": "t", "partition": 0, "offset": 0})
>>> [(a.type, a.subject == chain.truth[0]["subject"]) for a in alerts if a.type == "pump_and_dump"]
[('pump_and_dump', True)]
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.alerts import Alert
from pipeline.records import (
    ChainRecord,
    DexEvent,
    Label,
    Retraction,
    TokenTransfer,
    Trade,
    Transaction,
)
from pipeline.rules import Rule, RuleSet
from pipeline.scoring.dex import DexScoring
from pipeline.scoring.retractions import Retractions
from pipeline.scoring.trades import LABEL_SOURCE, TradeScoring
from pipeline.scoring.transactions import TransactionScoring
from pipeline.state import StateError, fields

log = logging.getLogger(__name__)


class Scorer:
    """One partition's whole state (features, models, filters) and the rules that alert.

    ``rules`` defaults to the registered rules with their defaults (``RuleSet.load()``).
    """

    def __init__(self, seed: int = 42, rules: RuleSet | None = None) -> None:
        self.seed = seed
        self.ruleset = rules if rules is not None else RuleSet.load()
        self.dex = DexScoring(self.ruleset, seed)
        self.transactions = TransactionScoring(self.ruleset, seed)
        self.trades = TradeScoring(self.ruleset, seed)
        self.retractions = Retractions()
        self.events = 0

    def process(self, record: ChainRecord, source: dict[str, Any]) -> list[Alert]:
        """Score ``record`` (and learn from it); return the alerts it triggers.

        ``source`` (topic, partition, offset) is copied into each alert's ``source`` with the
        ``item_ids`` of the triggering records. A retraction raises the ``retraction`` of the
        alerts its block's records raised (:mod:`pipeline.scoring.retractions`).
        """
        self.events += 1
        if isinstance(record, DexEvent):
            alerts = self.dex.process(record, source)
            self.retractions.note(alerts)
            return alerts
        if isinstance(record, Transaction | TokenTransfer):
            alerts = self.transactions.process(record, source)
            self.retractions.note(alerts)
            return alerts
        if isinstance(record, Retraction):
            return self.retractions.retract(record, source)
        if isinstance(record, Trade):
            return self.trades.process(record, source)
        if isinstance(record, Label):
            if record.source == LABEL_SOURCE:
                self.trades.learn_label(record)
            else:
                self.transactions.learn_label(record)
        return []

    def state(self) -> dict[str, Any]:
        """Everything this Scorer learned, as plain data (see :mod:`pipeline.state`)."""
        return {"v": 3, "seed": self.seed, "events": self.events, "dex": self.dex.state(),
                "transactions": self.transactions.state(), "trades": self.trades.state(),
                "retractable": self.retractions.state()}

    def load_state(self, state: dict[str, Any]) -> list[str]:
        """Load :meth:`state` into this Scorer, built from today's configuration. Rules whose
        detector or filter changed since, or that are new, start fresh; the returned notes
        (also logged) say which. Raises :class:`~pipeline.state.StateError` if the state
        does not fit at all."""
        parts = {"seed": int, "events": int, "dex": dict, "transactions": dict, "trades": dict}
        if isinstance(state, dict) and state.get("v") == 2:  # written before retractions
            fields(state, "scorer", 2, **parts)
        else:
            fields(state, "scorer", 3, **parts, retractable=list)
        if state["seed"] != self.seed:
            raise StateError(f"the checkpoint's scorer has seed {state['seed']}, this one "
                             f"{self.seed}")
        notes = self.dex.load_state(state["dex"]) + \
            self.transactions.load_state(state["transactions"]) + \
            self.trades.load_state(state["trades"])
        self.events = state["events"]
        self.retractions.load_state(state.get("retractable", []))
        for note in notes:
            log.warning("restoring a checkpoint: %s", note)
        return notes

    @property
    def rules(self) -> list[Rule]:
        """Every live rule, DEX ones first."""
        return [*self.dex.rules, *self.transactions.rules, *self.trades.rules]

    def prequential_score(self, item_id: str) -> float | None:
        """The supervised model's score of a scored transaction whose label is pending."""
        return self.transactions.supervised.prequential_score(item_id)

    def metrics(self) -> dict[str, float]:
        """Counters and gauges for the service to export (names without a prefix):
        events per topic, keys tracked and evictions per feature store, drifts detected per
        rule, label bookkeeping, alerts raised per type, errors raised by each rule's detector."""
        out: dict[str, float] = {"events": float(self.events)}
        out |= self.dex.metrics()
        out |= self.transactions.metrics()
        out |= self.trades.metrics()
        alerts = dict(self.dex.alerts)
        for kind, count in [*self.dex.trades.alerts.items(), *self.transactions.alerts.items(),
                            *self.trades.alerts.items()]:
            alerts[kind] = alerts.get(kind, 0) + count
        if self.retractions.raised:
            alerts["retraction"] = self.retractions.raised
        for kind, count in sorted(alerts.items()):
            out[f"alerts_{kind}"] = float(count)
        return out
