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

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.alerts import Alert
from pipeline.detectors import Detector, QuantileFilter, ThresholdFilter
from pipeline.records import DexEvent, Transaction
from pipeline.rules.alerting import build_alert, jsonable, rounded
from pipeline.rules.spec import RuleSpec


@dataclass(frozen=True)
class Event:
    """What a rule sees of one scored record: the record, its feature dict ``x``, the feature
    state of its key (a :class:`~pipeline.features.PoolState` for DEX events, the
    :class:`~pipeline.features.AddressFeatures` for transactions), its subject (pool address
    or sender), and where it was read."""

    record: Transaction | DexEvent
    x: dict[str, float]
    state: Any
    subject: str
    source: dict[str, Any]


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


def record_addresses(record: Transaction | DexEvent) -> tuple[str, ...]:
    if isinstance(record, DexEvent):
        return (record.token0, record.token1)
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
        f = self.filter
        if isinstance(f, QuantileFilter):
            flagged = f.flags(score)
        else:
            flagged = score > 0.0 and f.crosses(score)
        learn = self.spec.learn
        if learn == "all" or (learn == "unflagged" and not flagged):
            try:
                self.detector.learn_one(event.x)
            except Exception as exc:
                self._failed("learn_one", exc)
        if not flagged or any(event.x.get(k, 0.0) < v for k, v in self.spec.require.items()):
            return score, None
        block = event.record.block_number
        if isinstance(f, QuantileFilter):
            allowed = f.decide(event.subject, block)
        else:
            allowed = f.cooldown.allow(event.subject, block)
        if not allowed:
            return score, None
        self.alerts += 1
        return score, self.alert(event, min(max(score, 0.0), 1.0))

    def alert(self, event: Event, score: float) -> Alert:
        finding = self.explain(self, event, score)
        record = event.record
        return build_alert(
            type=self.name, score=score, subject=event.subject, detector=self.detector_name,
            version=self.detector_version,
            evidence=finding.evidence, source=event.source,
            item_ids=finding.item_ids if finding.item_ids is not None else [record.item_id],
            block=record.block_number, timestamp=record.block_timestamp,
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

    def _failed(self, method: str, exc: Exception) -> float:
        self.errors += 1
        self.last_error = f"{type(self.detector).__name__}.{method}: {type(exc).__name__}: {exc}"
        return 0.0
