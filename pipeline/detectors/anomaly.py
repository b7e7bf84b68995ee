"""Unsupervised anomaly scoring of transactions: river's Half-Space Trees behind a scaler."""

from __future__ import annotations

from typing import Any

from river import anomaly, preprocessing

from pipeline.detectors.base import Configurable
from pipeline.state import fields, river_blob, river_estimator

TRANSFER_FEATURES = ("novel_value", "novel_fan_out", "value_out_10")
"""Value moved by and to novel wallets, the fan-out of a young sender to never-seen
recipients, and the value a sender moved in the last 10 blocks (see
:mod:`pipeline.features.addresses`). Few features: Half-Space Trees resolve joint rarity
poorly as dimensions grow, and these carry the money-movement typologies (fresh wallets
moving large sums, fan-outs, peel chains) directly."""


class TransferAnomaly(Configurable):
    """Half-Space Trees over min-max scaled transaction features; score in [0, 1].

    Five trees: on the tuning seeds (``bench/detect.py --seeds 1-8 --difficulties 0.5``)
    anomalous-transfer F1 was 0.50 / 0.55 (one scorer / split four ways) with ten trees and
    0.51 / 0.49 with five, at half the cost — walking the trees is most of a transaction's
    scoring time. Three trees fell to 0.41 / 0.42.

    A feature missing from ``x`` counts as 0. The score is 0 until ``window_size`` events
    were learned (the trees have no reference mass before). ``score_one`` learns nothing; the
    scorer calls ``learn_one`` only for events its :class:`~pipeline.detectors.base.QuantileFilter`
    did not flag, so anomalies never become the reference.

    :meth:`state` saves the scaler and the trees as river blobs (:mod:`pipeline.state`) and
    the count of events learned; :meth:`load_state` refuses blobs of another river version.

    >>> import random
    >>> rng, det = random.Random(0), TransferAnomaly(features=("a", "b"), window_size=100,
    ...                                              seed=1)
    >>> for x in [{"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 1.0}] + [
    ...         {"a": rng.gauss(0.5, 0.1), "b": rng.gauss(0.5, 0.1)} for _ in range(300)]:
    ...     det.learn_one(x)
    >>> det.score_one({"a": 0.5, "b": 0.5}) < det.score_one({"a": 0.02, "b": 0.97})
    True
    """

    name = "transfer_anomaly"
    version = "3"

    def __init__(self, features: tuple[str, ...] = TRANSFER_FEATURES, n_trees: int = 5,
                 height: int = 6, window_size: int = 1000, seed: int = 42) -> None:
        self.features = tuple(features)
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.scaler: Any = preprocessing.MinMaxScaler()
        self.trees: Any = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height,
                                                 window_size=window_size, seed=seed)
        self.seen = 0

    def _vector(self, x: dict[str, float]) -> dict[str, float]:
        get = x.get
        return {f: get(f, 0.0) for f in self.features}

    @property
    def warm(self) -> bool:
        """Whether ``window_size`` events were learned: only then do its scores mean
        something (a rule watches a detector's drift once it is warm)."""
        return self.seen >= self.window_size

    def learn_one(self, x: dict[str, float]) -> None:
        v = self._vector(x)
        self.scaler.learn_one(v)
        self.trees.learn_one(self.scaler.transform_one(v))
        self.seen += 1

    def state(self) -> dict[str, Any]:
        return {"v": 1, "scaler": river_blob(self.scaler), "trees": river_blob(self.trees),
                "seen": self.seen}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "transfer anomaly", 1, scaler=dict, trees=dict, seen=int)
        scaler = river_estimator(state["scaler"], "transfer anomaly scaler",
                                 lambda e: isinstance(e, preprocessing.MinMaxScaler))
        trees = river_estimator(state["trees"], "transfer anomaly trees",
                                lambda e: isinstance(e, anomaly.HalfSpaceTrees))
        self.scaler, self.trees, self.seen = scaler, trees, state["seen"]

    def score_one(self, x: dict[str, float]) -> float:
        if self.seen < self.window_size:  # still warming up: no opinion yet
            return 0.0
        return float(self.trees.score_one(self.scaler.transform_one(self._vector(x))))
