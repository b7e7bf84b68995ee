"""Detectors: river-style estimators that score events; alert decisions are separate filters.

Every detector has ``learn_one(x)`` and ``score_one(x) -> float`` (higher is more suspicious).
A :class:`~pipeline.detectors.base.AlertFilter` decides whether a score is an alert, so a
detector never learns from the outliers it flags.
"""

from pipeline.detectors.anomaly import TransferAnomaly
from pipeline.detectors.base import AlertFilter, Detector
from pipeline.detectors.pump import PumpPhase

__all__ = ["AlertFilter", "Detector", "PumpPhase", "TransferAnomaly"]
