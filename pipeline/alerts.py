"""Alerts: what, about whom, how sure, and why (modelled on Forta's ``Finding``).

An alert's id is a hash of its detector, subject and triggering item ids, and every field is a
function of the input stream (``detected_at`` is stream time: the block timestamp of the event
that fired it), so a replay after a crash yields byte-identical alerts that de-duplicate
downstream.

>>> a = Alert.build(type="pump_and_dump", severity="high", score=0.93,
...     subject="0x" + "aa" * 20, detector="pump_phase", model_version="1",
...     evidence={"return_10": 0.41}, source={"topic": "chain.dex", "partition": 0,
...     "offset": 7, "item_ids": ["log_0x01_3"]}, event_time=100, detected_at=112)
>>> Alert.from_json(a.to_json()) == a, len(a.alert_id)
(True, 32)
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

SEVERITIES = ("info", "low", "medium", "high", "critical")
ALERT_TYPES = ("pump_and_dump", "rug_pull", "wash_trading", "anomalous_transfer", "anomaly",
               "model_drift", "rug_risk", "retraction")


def alert_id(detector: str, subject: str, item_ids: list[str]) -> str:
    """Deterministic id: SHA-256 of detector, subject and sorted triggering item ids."""
    material = "\x1f".join([detector, subject, *sorted(item_ids)])
    return hashlib.sha256(material.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    type: str
    severity: str
    score: float
    subject: str
    addresses: tuple[str, ...]
    evidence: dict[str, Any]
    detector: str
    model_version: str
    source: dict[str, Any]
    event_time: int
    detected_at: int
    labels: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, *, type: str, severity: str, score: float, subject: str, detector: str,
              model_version: str, evidence: dict[str, Any], source: dict[str, Any],
              event_time: int, detected_at: int, addresses: tuple[str, ...] = (),
              labels: dict[str, Any] | None = None) -> Alert:
        if severity not in SEVERITIES:
            raise ValueError(f"severity {severity!r} is not one of {SEVERITIES}")
        item_ids = list(source.get("item_ids", []))
        return cls(
            alert_id=alert_id(detector, subject, item_ids),
            type=type, severity=severity, score=round(float(score), 6), subject=subject,
            addresses=tuple(addresses), evidence=evidence, detector=detector,
            model_version=model_version, source=source, event_time=event_time,
            detected_at=detected_at, labels=dict(labels or {}),
        )

    def to_json(self) -> bytes:
        """Canonical bytes: sorted keys, compact; the same alert always encodes the same."""
        return orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes) -> Alert:
        obj = orjson.loads(data)
        obj["addresses"] = tuple(obj["addresses"])
        return cls(**obj)
