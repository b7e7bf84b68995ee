"""What both per-topic scorers share: alert building, severities, drift on score streams."""

from __future__ import annotations

from typing import Any

from pipeline.alerts import Alert
from pipeline.detectors import Cooldown, ScoreDrift

DRIFT_ALERT_GAP_BLOCKS = 1_000
"""At most one ``model_drift`` alert per detector in this many blocks."""


def severity(score: float) -> str:
    """Severity from a score in [0, 1].

    >>> [severity(s) for s in (0.3, 0.6, 0.8, 0.95, 0.99)]
    ['low', 'medium', 'medium', 'high', 'critical']
    """
    if score >= 0.98:
        return "critical"
    if score >= 0.9:
        return "high"
    if score >= 0.6:
        return "medium"
    return "low"


def rounded(x: dict[str, float], keys: tuple[str, ...] | None = None) -> dict[str, float]:
    """Feature values for evidence, rounded so their JSON is short and stable."""
    if keys is None:
        return {k: round(v, 6) for k, v in sorted(x.items())}
    return {k: round(x[k], 6) for k in keys if k in x}


def build_alert(*, type: str, score: float, subject: str, detector: Any,
                evidence: dict[str, Any], source: dict[str, Any], item_ids: list[str],
                block: int, timestamp: int, addresses: tuple[str, ...] = (),
                level: str | None = None) -> Alert:
    """An :class:`~pipeline.alerts.Alert` at stream time ``timestamp`` of ``block``."""
    return Alert.build(
        type=type, severity=level or severity(score), score=score, subject=subject,
        detector=detector.name, model_version=detector.version, evidence=evidence,
        source=source | {"item_ids": item_ids}, event_time=timestamp, detected_at=timestamp,
        addresses=addresses, labels={"block_number": block},
    )


class DriftWatch:
    """ADWIN (:class:`~pipeline.detectors.ScoreDrift`) on the mean score of each named
    detector per span of ``span_blocks`` blocks; a detected change may raise one
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
            subject=f"{name}@{item_id}", detector=monitor,
            evidence={"detector": name, "span_mean_score": round(mean, 6),
                      "window_mean_score": round(float(monitor.adwin.estimation), 6),
                      "window_width": int(monitor.adwin.width), "drifts": monitor.drifts,
                      "delta": monitor.delta, "span_blocks": self.span_blocks},
            source=source, item_ids=[item_id], block=block, timestamp=timestamp,
            level="info") for name, mean, monitor in drifted]

    @property
    def drifts(self) -> dict[str, int]:
        return {name: monitor.drifts for name, monitor in self.monitors.items()}
