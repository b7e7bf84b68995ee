"""Scoring of one partition's trades: the rules on kind ``trades``, and what they learn from
labelled pumps.

A Scorer holds two of these: one for the trades topic (exchange trades, and the labels of
announced pumps on ``chainwatch.labels``), one for the swaps of the DEX topic seen as trades
(:func:`~pipeline.features.trades.trade_from_swap`), so each stays a function of its own
topic's order.

Labels (source :data:`LABEL_SOURCE`) name a stream (a trade's :attr:`key
<pipeline.records.Trade.key>`), whether a pump was announced on it (``label``) and when
(``block_number``, unix seconds); they are applied once the trades reach their
``released_block`` (unix seconds too), so their effect does not depend on how the service
interleaves topics. Rules with ``learn = "labels"`` learn from *candidates*: the features of
moments a rule scored at least its detector's ``candidate`` level (at most one per stream per
:data:`CANDIDATE_GAP_S`), kept until a label of their stream says what they were —
a pump when within [announcement - :data:`PUMP_BEFORE_S`, announcement +
:data:`PUMP_AFTER_S`], ordinary trading when older (or every one, for a label 0: no pump) —
or forgotten, untaught, after :data:`CANDIDATE_HORIZON_S`. A candidate is always scored
before it is learnt: prequential.

Only labels teach, in the order they are read from their partition, so what a model learns
and in which order does not depend on how the service interleaves the topics; only the
moment it learns does (a label is applied when both it has been read and the trades reached
its release second).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from typing import Any

from pipeline import codec
from pipeline.alerts import Alert
from pipeline.features.trades import TradeFeatures
from pipeline.records import Label, Trade
from pipeline.rules import Event, Rule, RuleSet
from pipeline.scoring.common import load_rules_state, rules_state
from pipeline.state import StateError, fields

LABEL_SOURCE = "pumps"
"""The ``source`` of the labels that name announced pumps (see :mod:`producers.formats`)."""
CANDIDATE_GAP_S = 10
PUMP_BEFORE_S = 60
PUMP_AFTER_S = 600
CANDIDATE_HORIZON_S = 3 * 86_400
MAX_CANDIDATES = 256  # per stream
MAX_STREAMS = 10_000  # streams with candidates waiting
MAX_WAITING_LABELS = 10_000


class TradeScoring:
    """Trade features and the ``trades`` rules of ``rules`` (by default: pump_and_dump)."""

    def __init__(self, rules: RuleSet, seed: int = 42) -> None:
        self.features = TradeFeatures()
        self.rules: list[Rule] = rules.build("trades", seed)
        self.learners = [r for r in self.rules if r.spec.learn == "labels"]
        # stream -> candidates (second, rule name, features) awaiting a label, oldest first
        self.candidates: OrderedDict[str, deque[tuple[int, str, dict[str, float]]]] = \
            OrderedDict()
        self.waiting: list[tuple[int, int, Label]] = []  # (release second, seq, label)
        self.labelled: set[str] = set()  # streams whose pump label was applied
        self.clock = 0  # the newest trade's unix second
        self.events = self.labels = self.learnt = self.dropped = self.expired = 0
        self.alerts: dict[str, int] = {}

    def process(self, trade: Trade, source: dict[str, Any],
                subject: str | None = None) -> list[Alert]:
        """Score ``trade`` with every rule; ``subject`` defaults to the trade's key."""
        self.events += 1
        second = trade.time_s
        if second > self.clock:
            self.clock = second
            self._release()
        st, x = self.features.update_state(trade)
        event = Event(trade, x, st, subject or trade.key, source)
        alerts: list[Alert] = []
        for rule in self.rules:
            score, alert = rule.apply(event)
            if alert is not None:
                alerts.append(alert)
            if rule in self.learners:
                self._remember(trade.key, second, rule, score, x)
        for alert in alerts:
            self.alerts[alert.type] = self.alerts.get(alert.type, 0) + 1
        return alerts

    # -- learning from labels --------------------------------------------------------------

    def learn_label(self, label: Label) -> None:
        """Apply ``label`` once the trades reach its release second (now, if they have)."""
        self.labels += 1
        if label.released_block <= self.clock:
            self._apply(label)
            return
        heapq.heappush(self.waiting, (label.released_block, self.labels, label))
        if len(self.waiting) > MAX_WAITING_LABELS:  # bounded: drop the latest-due one
            self.waiting.remove(max(self.waiting))
            heapq.heapify(self.waiting)
            self.dropped += 1

    def _release(self) -> None:
        while self.waiting and self.waiting[0][0] <= self.clock:
            self._apply(heapq.heappop(self.waiting)[2])
        horizon = self.clock - CANDIDATE_HORIZON_S
        for stream in list(self.candidates):  # no label came for them: forgotten, not taught
            queue = self.candidates[stream]
            while queue and queue[0][0] < horizon:
                queue.popleft()
                self.expired += 1
            if not queue:
                del self.candidates[stream]

    def _apply(self, label: Label) -> None:
        stream, start = label.subject, label.block_number
        if label.label and stream in self.labelled:
            return  # the same pump's label again (a replay resumed, say)
        if label.label:
            self.labelled.add(stream)
        queue = self.candidates.pop(stream, deque())
        for candidate in queue:
            second = candidate[0]
            pump = label.label and start - PUMP_BEFORE_S <= second <= start + PUMP_AFTER_S
            if second < start - PUMP_BEFORE_S or pump:
                self._teach(candidate, int(pump))
            elif not label.label:
                self._teach(candidate, 0)
            # later than the pump's minutes: its aftermath, neither pump nor ordinary trading

    def _teach(self, candidate: tuple[int, str, dict[str, float]], y: int) -> None:
        for rule in self.learners:
            if rule.name == candidate[1]:
                rule.learn_outcome(candidate[2], y)
                self.learnt += 1

    def _remember(self, stream: str, second: int, rule: Rule, score: float,
                  x: dict[str, float]) -> None:
        detector = rule.detector
        level = getattr(detector, "candidate", None)
        if level is None:
            return
        burst = getattr(detector, "burst", None)
        # a cold model scores the burst itself; a warm one reweighs it
        strength = burst(x) if callable(burst) and getattr(detector, "warm", False) else score
        if strength < level:
            return
        queue = self.candidates.get(stream)
        if queue is None:
            queue = self.candidates[stream] = deque()
            while len(self.candidates) > MAX_STREAMS:
                self.candidates.popitem(last=False)
                self.dropped += 1
        elif queue and second - queue[-1][0] < CANDIDATE_GAP_S:
            return
        queue.append((second, rule.name, dict(x)))
        if len(queue) > MAX_CANDIDATES:
            queue.popleft()
            self.dropped += 1

    # -- state ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"v": 1, "features": self.features.state(), "rules": rules_state(self.rules),
                "candidates": [[stream, [[s, name, x] for s, name, x in queue]]
                               for stream, queue in self.candidates.items()],
                "waiting": [[due, seq, codec.encode(label)] for due, seq, label in self.waiting],
                "labelled": sorted(self.labelled),
                "counts": [self.clock, self.events, self.labels, self.learnt, self.dropped,
                           self.expired],
                "alerts": self.alerts}

    def load_state(self, state: dict[str, Any]) -> list[str]:
        fields(state, "trade scoring", 1, features=dict, rules=dict, candidates=list,
               waiting=list, labelled=list, counts=list, alerts=dict)
        self.features.load_state(state["features"])
        notes = load_rules_state(self.rules, state["rules"])
        try:
            self.candidates = OrderedDict(
                (str(stream), deque((int(s), str(name), {str(k): float(v) for k, v in x.items()})
                                    for s, name, x in queue))
                for stream, queue in state["candidates"])
            waiting = []
            for due, seq, data in state["waiting"]:
                label = codec.decode(data, (Label.record_type,))
                assert isinstance(label, Label)
                waiting.append((int(due), int(seq), label))
            (self.clock, self.events, self.labels, self.learnt, self.dropped,
             self.expired) = (int(n) for n in state["counts"])
        except (TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"trade scoring state: {exc}") from None
        heapq.heapify(waiting)
        self.waiting = waiting
        self.labelled = {str(s) for s in state["labelled"]}
        self.alerts = dict(state["alerts"])
        return notes

    def metrics(self, prefix: str = "trade") -> dict[str, float]:
        return {f"{prefix}_events": float(self.events),
                f"{prefix}_markets_tracked": float(len(self.features.markets)),
                f"evictions_{prefix}_markets": float(self.features.markets.evictions),
                f"{prefix}_labels": float(self.labels),
                f"{prefix}_candidates_learnt": float(self.learnt),
                f"{prefix}_candidates_dropped": float(self.dropped),
                f"{prefix}_candidates_expired": float(self.expired),
                **{f"rule_errors_{r.name}": float(r.errors) for r in self.rules}}
