"""What both per-topic scorers share: drift on the score streams of their rules."""

from __future__ import annotations

from typing import Any

from pipeline.alerts import Alert
from pipeline.detectors import Cooldown, ScoreDrift
from pipeline.rules import Rule, build_alert
from pipeline.state import fields

DRIFT_ALERT_GAP_BLOCKS = 1_000
"""At most one ``model_drift`` alert per detector in this many blocks."""


def rules_state(rules: list[Rule]) -> dict[str, Any]:
    return {rule.name: rule.state() for rule in rules}


def load_rules_state(rules: list[Rule], saved: dict[str, Any]) -> list[str]:
    """Load each rule's saved state by name; notes say which rules start fresh (new, or
    their detector changed) and which saved ones are no longer configured."""
    notes: list[str] = []
    for rule in rules:
        if rule.name in saved:
            notes += rule.load_state(saved[rule.name])
        else:
            notes.append(f"rule {rule.name} is new since the checkpoint; it starts fresh")
    gone = sorted(set(saved) - {rule.name for rule in rules})
    if gone:
        notes.append(f"rules {', '.join(gone)} of the checkpoint are not configured now; "
                     "their state is dropped")
    return notes


class DriftWatch:
    """ADWIN (:class:`~pipeline.detectors.ScoreDrift`) on the mean score of each named
    rule per span of ``span_blocks`` blocks; a detected change may raise one
    ``model_drift`` alert per detector every :data:`DRIFT_ALERT_GAP_BLOCKS`.

    Scores are averaged per span of stream time and fed when the stream enters a later span,
    so a monitor sees one value per span whatever the event rate, and a short burst of high
    scores (one incident, already alerted) barely moves it: what it reports is a sustained
    change of a detector's score level. A detector adds scores only once it is warm.
    """

    def __init__(self, detectors: tuple[str, ...], delta: float = 0.002,
                 span_blocks: int = 10) -> None:
        self.detectors = detectors
        self.delta = delta
        self.span_blocks = span_blocks
        self.monitors = {name: ScoreDrift(delta=delta) for name in detectors}
        self.cooldown = Cooldown(DRIFT_ALERT_GAP_BLOCKS)
        self.span = -1
        self._sums = dict.fromkeys(detectors, 0.0)
        self._counts = dict.fromkeys(detectors, 0)

    def add(self, name: str, score: float) -> None:
        self._sums[name] += score
        self._counts[name] += 1

    def advance(self, block: int) -> list[tuple[str, float, ScoreDrift]]:
        """Close the spans before ``block``'s; return (detector, span mean, monitor) for each
        drift that may alert."""
        span = block // self.span_blocks
        if span <= self.span:
            return []
        drifted: list[tuple[str, float, ScoreDrift]] = []
        for name, monitor in self.monitors.items():
            count = self._counts[name]
            if not count:
                continue
            mean = self._sums[name] / count
            monitor.learn_one({"score": mean})
            if monitor.drift_detected and self.cooldown.allow(name, block):
                drifted.append((name, mean, monitor))
        self.span = span
        self._sums = dict.fromkeys(self.detectors, 0.0)
        self._counts = dict.fromkeys(self.detectors, 0)
        return drifted

    def drift_alerts(self, drifted: list[tuple[str, float, ScoreDrift]], item_id: str,
                     source: dict[str, Any], block: int, timestamp: int) -> list[Alert]:
        """``model_drift`` alerts whose subject is ``detector@item_id``: the same in any
        partitioning that gives the detector the same stream."""
        return [build_alert(
            type="model_drift", score=min(1.0, monitor.score_one({"score": mean})),
            subject=f"{name}@{item_id}", detector=monitor.name,
            version=monitor.version,
            evidence={"rule": name, "span_mean_score": round(mean, 6),
                      "window_mean_score": round(float(monitor.adwin.estimation), 6),
                      "window_width": int(monitor.adwin.width), "drifts": monitor.drifts,
                      "delta": monitor.delta, "span_blocks": self.span_blocks},
            source=source, item_ids=[item_id], block=block, timestamp=timestamp,
            level="info") for name, mean, monitor in drifted]

    def state(self) -> dict[str, Any]:
        return {"v": 1, "span": self.span, "cooldown": self.cooldown.state(),
                "monitors": {name: m.state() for name, m in self.monitors.items()},
                "sums": dict(self._sums), "counts": dict(self._counts)}

    def load_state(self, state: dict[str, Any]) -> None:
        """Load :meth:`state`; a rule watched now but not then starts with a fresh monitor,
        one watched then but not now is dropped."""
        fields(state, "drift watch", 1, span=int, cooldown=dict, monitors=dict, sums=dict,
               counts=dict)
        self.span = state["span"]
        self.cooldown.load_state(state["cooldown"])
        for name, monitor in self.monitors.items():
            if name in state["monitors"]:
                monitor.load_state(state["monitors"][name])
                self._sums[name] = float(state["sums"].get(name, 0.0))
                self._counts[name] = int(state["counts"].get(name, 0))

    @property
    def drifts(self) -> dict[str, int]:
        return {name: monitor.drifts for name, monitor in self.monitors.items()}
