"""Detectors: river-style estimators that score events; alert decisions are separate filters.

Every detector has ``learn_one(x)`` and a pure ``score_one(x) -> float`` (higher is more
suspicious) over the flat feature dicts of :mod:`pipeline.features`, ``name`` and
``version`` attributes, and its constructor arguments stored verbatim (``params()``,
:func:`~pipeline.detectors.base.clone`). A filter — :class:`ThresholdFilter` or
:class:`QuantileFilter`, each with a per-subject :class:`Cooldown` — decides whether a score
is an alert, and the scorer learns a detector only from what its filter let pass, so a
detector never learns from the outliers it flags.

The family:

* :class:`TransferAnomaly` — unsupervised: Half-Space Trees on scaled transaction features;
* :class:`PumpBurst` — the start of a pump on a market's trades (exchange or DEX): a burst
  of buy orders and a rising price, sharpened by a model of labelled pumps;
* :class:`PumpPhase` — the pump of a pump-and-dump on pool features, before the dump;
* :class:`LiquidityDrain` — a rug pull: most of a pool's WETH gone within a few blocks;
* :class:`WashTrading` — a cluster trading one pool in circles, net position ≈ 0;
* :class:`PoolRisk` — supervised by pools' delayed outcomes: will this pool be drained or
  crash within a day?
* :class:`DelayedLabelModel` — supervised, learns from delayed labels; scores, never alerts;
* :class:`ScoreDrift` — ADWIN on another detector's score stream: drifts as a metric and an
  alert.
"""

from pipeline.detectors.anomaly import TRANSFER_FEATURES, TransferAnomaly
from pipeline.detectors.base import (
    Configurable,
    Cooldown,
    Detector,
    QuantileFilter,
    ThresholdFilter,
    clone,
    ramp,
)
from pipeline.detectors.drift import ScoreDrift
from pipeline.detectors.pump import PumpBurst, PumpPhase
from pipeline.detectors.risk import RISK_FEATURES, PoolRisk
from pipeline.detectors.rug import LiquidityDrain
from pipeline.detectors.supervised import SUPERVISED_FEATURES, DelayedLabelModel
from pipeline.detectors.wash import WashTrading

__all__ = [
    "RISK_FEATURES",
    "SUPERVISED_FEATURES",
    "TRANSFER_FEATURES",
    "Configurable",
    "Cooldown",
    "DelayedLabelModel",
    "Detector",
    "LiquidityDrain",
    "PoolRisk",
    "PumpBurst",
    "PumpPhase",
    "QuantileFilter",
    "ScoreDrift",
    "ThresholdFilter",
    "TransferAnomaly",
    "WashTrading",
    "clone",
    "ramp",
]
