"""From a score to an :class:`~pipeline.alerts.Alert`: severities, evidence, the alert itself."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pipeline.alerts import Alert


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


def rounded(x: Mapping[str, float], keys: tuple[str, ...] | None = None) -> dict[str, float]:
    """Feature values for evidence, rounded so their JSON is short and stable (every feature
    when ``keys`` is None, else those of ``keys`` that ``x`` has, in that order)."""
    if keys is None:
        return {k: round(v, 6) for k, v in sorted(x.items())}
    return {k: round(x[k], 6) for k in keys if k in x}


def jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    """A detector's configuration as evidence: numbers, strings, booleans and lists of them;
    anything else as its ``repr``; non-finite floats as strings."""
    def one(value: Any) -> Any:
        if isinstance(value, bool | int | str) or value is None:
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        if isinstance(value, list | tuple):
            return [one(v) for v in value]
        return repr(value)
    return {name: one(value) for name, value in sorted(params.items())}


def build_alert(*, type: str, score: float, subject: str, detector: str, version: str,
                evidence: dict[str, Any], source: dict[str, Any], item_ids: list[str],
                block: int, timestamp: int, addresses: tuple[str, ...] = (),
                level: str | None = None) -> Alert:
    """An :class:`~pipeline.alerts.Alert` at stream time ``timestamp`` of ``block``, by
    ``detector`` of ``version``."""
    return Alert.build(
        type=type, severity=level or severity(score), score=score, subject=subject,
        detector=detector, model_version=version, evidence=evidence,
        source=source | {"item_ids": item_ids}, event_time=timestamp, detected_at=timestamp,
        addresses=addresses, labels={"block_number": block},
    )
