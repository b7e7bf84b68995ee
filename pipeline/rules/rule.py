"""A rule at work: one detector, its filter, and the alerts it raises.

For every event of its record kind a :class:`Rule`

1. scores the event's feature dict with its detector (``score_one``, high = suspicious);
2. asks its filter whether the score is flagged (at or over the threshold, or at or over the
   running quantile of recent scores; a score of 0 is never flagged);
3. lets the detector learn the event as ``learn`` says (by default only events that were
   not flagged: a detector never learns the outliers it reports);
4. alerts when the score was flagged, the event reaches the ``require`` minimums and the
   subject (the pool, or the sending address) is out of its cool-down.

A detector that raises, or returns something that is not a finite number, has scored 0 for
that event; the rule counts it in :attr:`Rule.errors` and keeps :attr:`Rule.last_error`, and
the scorer goes on (:mod:`pipeline.rules.registry` already tried every detector once at
start-up, so such errors are data-dependent).
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.alerts import Alert
from pipeline.detectors import Detector, QuantileFilter, ThresholdFilter
from pipeline.records import DexEvent, Trade, Transaction
from pipeline.rules.alerting import build_alert, jsonable, rounded
from pipeline.rules.spec import RuleSpec
from pipeline.state import StateError, fields

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """What a rule sees of one scored record: the record, its feature dict ``x``, the feature
    state of its key (a :class:`~pipeline.features.PoolState` for DEX events, the
    :class:`~pipeline.features.AddressFeatures` for transactions), its subject (pool address
    or sender), and where it was read."""

    record: Transaction | DexEvent | Trade
    x: dict[str, float]
    state: Any
    subject: str
    source: dict[str, Any]

    @property
    def clock(self) -> tuple[int, int]:
        """(stream time, timestamp in unix s): a chain record's block and block timestamp; an
        exchange trade's unix second for both (cool-downs of its rules are in seconds), a DEX
        trade's block and second."""
        record = self.record
        if isinstance(record, Trade):
            block = record.block_number
            return (record.time_s if block is None else block), record.time_s
        return record.block_number, record.block_timestamp


@dataclass
class Finding:
    """What an alert reports beyond its score: evidence, the records behind it, the addresses
    involved and a severity. None: the defaults (the triggering record, the record's
    addresses, the severity of the score)."""

    evidence: dict[str, Any]
    item_ids: list[str] | None = None
    addresses: tuple[str, ...] | None = None
    severity: str | None = None


Explainer = Callable[["Rule", Event, float], Finding]


def default_finding(rule: Rule, event: Event, score: float) -> Finding:
    """The features the spec's ``evidence`` names (every feature if None), the filter's cut
    and the detector's parameters."""
    return Finding(rounded(event.x, rule.spec.evidence) | rule.cut())


def record_addresses(record: Transaction | DexEvent | Trade) -> tuple[str, ...]:
    if isinstance(record, DexEvent):
        return (record.token0, record.token1)
    if isinstance(record, Trade):
        return tuple(a for a in (record.pool_address, record.taker) if a)
    return tuple(a for a in (record.from_address, record.to_address) if a)


class Rule:
    """One rule of a scorer: ``spec`` with a live ``detector`` and its filter."""

    def __init__(self, spec: RuleSpec, detector: Detector,
                 explain: Explainer = default_finding,
                 kwargs: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.detector = detector
        self.explain = explain
        self._kwargs = dict(spec.params) if kwargs is None else kwargs
        # a plug-in may leave out name and version: its class name, and "0"
        self.detector_name = str(getattr(detector, "name", type(detector).__name__))
        self.detector_version = str(getattr(detector, "version", "0"))
        self.filter: ThresholdFilter | QuantileFilter
        if spec.quantile is not None:
            self.filter = QuantileFilter(q=spec.quantile, window=spec.window,
                                         warmup=spec.warmup,
                                         cooldown_blocks=spec.cooldown_blocks)
        else:
            assert spec.threshold is not None  # RuleSpec holds exactly one
            self.filter = ThresholdFilter(threshold=spec.threshold,
                                          cooldown_blocks=spec.cooldown_blocks)
        self.errors = 0
        self.last_error = ""
        self.alerts = 0
        # evaluation: when a list, every score is appended as (subject, block, score)
        self.score_log: list[tuple[str, int, float]] | None = None

    def __repr__(self) -> str:
        return f"Rule({self.name!r}, {self.detector!r}, {self.spec.filter})"

    @property
    def warm(self) -> bool:
        """Whether the detector's scores mean something yet (a detector may say so with a
        ``warm`` attribute; one without is always warm). Drift is watched only when warm."""
        return bool(getattr(self.detector, "warm", True))

    def params(self) -> dict[str, Any]:
        """The detector's configuration: its ``params()`` if it has one (river style), else
        the arguments it was built with."""
        params = getattr(self.detector, "params", None)
        return jsonable(params() if callable(params) else self._kwargs)

    def score(self, x: dict[str, float]) -> float:
        """The detector's score of ``x``; 0 (and counted) if it raised or was not finite."""
        try:
            score = float(self.detector.score_one(x))
        except Exception as exc:
            return self._failed("score_one", exc)
        if not math.isfinite(score):
            return self._failed("score_one", ValueError(f"returned {score}"))
        return score

    def apply(self, event: Event) -> tuple[float, Alert | None]:
        """Score, filter, learn and maybe alert (steps 1-4 of the module docstring)."""
        score = self.score(event.x)
        if self.score_log is not None:
            self.score_log.append((event.subject, event.clock[0], score))
        f = self.filter
        if isinstance(f, QuantileFilter):
            flagged = f.flags(score)
        else:
            flagged = score > 0.0 and f.crosses(score)
        learn = self.spec.learn  # "outcomes": taught by the scorer, see learn_outcome
        if learn == "all" or (learn == "unflagged" and not flagged):
            try:
                self.detector.learn_one(event.x)
            except Exception as exc:
                self._failed("learn_one", exc)
        if not flagged or any(event.x.get(k, 0.0) < v for k, v in self.spec.require.items()):
            return score, None
        block = event.clock[0]
        if isinstance(f, QuantileFilter):
            allowed = f.decide(event.subject, block)
        else:
            allowed = f.cooldown.allow(event.subject, block)
        if not allowed:
            return score, None
        self.alerts += 1
        return score, self.alert(event, min(max(score, 0.0), 1.0))

    def learn_outcome(self, x: dict[str, float], y: int) -> None:
        """Teach a ``learn = "outcomes"`` rule's detector one released outcome."""
        try:
            self.detector.learn_one(x, y)  # type: ignore[call-arg]
        except Exception as exc:
            self._failed("learn_one", exc)

    def alert(self, event: Event, score: float) -> Alert:
        finding = self.explain(self, event, score)
        record = event.record
        block, timestamp = event.clock
        return build_alert(
            type=self.name, score=score, subject=event.subject, detector=self.detector_name,
            version=self.detector_version,
            evidence=finding.evidence, source=event.source,
            item_ids=finding.item_ids if finding.item_ids is not None else [record.item_id],
            block=block, timestamp=timestamp,
            addresses=finding.addresses if finding.addresses is not None
            else record_addresses(record),
            level=finding.severity)

    def cut(self) -> dict[str, Any]:
        """The filter's current cut and the detector's parameters, for evidence."""
        f = self.filter
        out: dict[str, Any] = {}
        if isinstance(f, QuantileFilter):
            out["threshold"] = round(f.threshold, 6) if math.isfinite(f.threshold) else None
            out["quantile"] = f.q
        else:
            out["threshold"] = f.threshold
        if self.spec.require:
            out["require"] = dict(sorted(self.spec.require.items()))
        out["params"] = self.params()
        return out

    # -- checkpoints ------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """What the detector's learned state belongs to: class, version and parameters."""
        return {"class": self.spec.detector, "version": self.detector_version,
                "params": self.params()}

    def state(self) -> dict[str, Any]:
        """The detector's state (its own ``state()`` when it has one, else a pickle: the
        checkpoint holding it is authenticated before anything in it is loaded), the filter's
        and the counters, with what they belong to."""
        own = getattr(self.detector, "state", None)
        detector = {"plain": own()} if callable(own) else {
            "pickle": pickle.dumps(self.detector, protocol=pickle.HIGHEST_PROTOCOL)}
        return {"v": 1, "identity": self.identity(), "detector": detector,
                "filter_spec": self.spec.filter, "filter": self.filter.state(),
                "errors": self.errors, "alerts": self.alerts}

    def load_state(self, state: dict[str, Any]) -> list[str]:
        """Load :meth:`state`; a detector whose class, version or parameters changed since,
        or a filter configured otherwise, starts fresh instead: returned as notes."""
        fields(state, f"rule {self.name}", 1, identity=dict, detector=dict, filter_spec=str,
               filter=dict, errors=int, alerts=int)
        notes: list[str] = []
        if state["identity"] != self.identity():
            notes.append(f"rule {self.name}: its detector was {state['identity']}, now "
                         f"{self.identity()}; it starts fresh")
        else:
            self._load_detector(state["detector"])
        if state["filter_spec"] != self.spec.filter:
            notes.append(f"rule {self.name}: its filter was {state['filter_spec']}, now "
                         f"{self.spec.filter}; the filter starts fresh")
        else:
            self.filter.load_state(state["filter"])
        self.errors, self.alerts = state["errors"], state["alerts"]
        return notes

    def _load_detector(self, saved: dict[str, Any]) -> None:
        if "plain" in saved:
            load = getattr(self.detector, "load_state", None)
            if not callable(load):
                raise StateError(f"rule {self.name}: the detector's state is plain data but "
                                 f"{type(self.detector).__name__} has no load_state()")
            load(saved["plain"])
            return
        blob = saved.get("pickle")
        if not isinstance(blob, bytes):
            raise StateError(f"rule {self.name}: the detector's state is missing")
        # authenticated: TaskManager restores only checkpoints the store's HMAC key or the
        # audit log vouched for, so these are bytes a scorer of this group wrote
        detector = pickle.loads(blob)
        if type(detector) is not type(self.detector):
            raise StateError(f"rule {self.name}: the saved detector is a "
                             f"{type(detector).__name__}, not a {type(self.detector).__name__}")
        self.detector = detector

    def _failed(self, method: str, exc: Exception) -> float:
        if not self.errors:
            log.warning("rule %s: %s.%s raised %s: %s; it scores 0 for such events (counted "
                        "in chainwatch_rule_errors)", self.name, type(self.detector).__name__,
                        method, type(exc).__name__, exc)
        self.errors += 1
        self.last_error = f"{type(self.detector).__name__}.{method}: {type(exc).__name__}: {exc}"
        return 0.0
