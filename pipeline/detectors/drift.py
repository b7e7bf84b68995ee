"""Drift detection on a detector's score stream, with river's ADWIN."""

from __future__ import annotations

from typing import Any

from river import drift

from pipeline.detectors.base import Configurable
from pipeline.state import fields, river_blob, river_estimator


class ScoreDrift(Configurable):
    """ADWIN over a stream of scores: counts the changes in their mean.

    ``learn_one({"score": s})`` feeds one value (the scorer feeds the mean score of each
    block, so the stream is per block of stream time, not per event);
    :attr:`drift_detected` tells whether that value revealed a change and :attr:`drifts`
    counts them. ``score_one`` is how far a score lies from the current window's mean.
    :meth:`state` saves ADWIN as a river blob (:mod:`pipeline.state`) and the counts.

    >>> d = ScoreDrift(delta=0.002)
    >>> for i in range(3000):
    ...     d.learn_one({"score": 0.1 if i < 1500 else 0.6})
    >>> d.drifts >= 1, round(d.score_one({"score": 0.6}), 2)
    (True, 0.0)
    """

    name = "score_drift"
    version = "1"

    def __init__(self, delta: float = 0.002, clock: int = 32) -> None:
        self.delta = delta
        self.clock = clock
        make: Any = drift.ADWIN  # river is untyped
        self.adwin: Any = make(delta=delta, clock=clock)
        self.drifts = 0
        self.drift_detected = False

    def learn_one(self, x: dict[str, float]) -> None:
        self.adwin.update(x.get("score", 0.0))
        self.drift_detected = bool(self.adwin.drift_detected)
        self.drifts += self.drift_detected

    def score_one(self, x: dict[str, float]) -> float:
        return abs(x.get("score", 0.0) - float(self.adwin.estimation))

    def state(self) -> dict[str, Any]:
        return {"v": 1, "adwin": river_blob(self.adwin), "drifts": self.drifts,
                "drift_detected": self.drift_detected}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "score drift", 1, adwin=dict, drifts=int, drift_detected=bool)
        adwin = river_estimator(state["adwin"], "score drift ADWIN",
                                lambda e: isinstance(e, drift.ADWIN))
        self.adwin, self.drifts = adwin, state["drifts"]
        self.drift_detected = state["drift_detected"]
