"""Unsupervised anomaly scoring of transfers with river's Half-Space Trees."""

from __future__ import annotations

from river import anomaly, compose, preprocessing


class TransferAnomaly:
    """Half-Space Trees over min-max scaled transfer features; score in [0, 1].

    >>> import random
    >>> rng, det = random.Random(0), TransferAnomaly(seed=1)
    >>> for x in [{"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 1.0}] + [
    ...         {"a": rng.gauss(0.5, 0.1), "b": rng.gauss(0.5, 0.1)} for _ in range(600)]:
    ...     det.learn_one(x)
    >>> det.score_one({"a": 0.5, "b": 0.5}) < det.score_one({"a": 0.02, "b": 0.97})
    True
    """

    name = "transfer_anomaly"
    version = "1"

    def __init__(self, n_trees: int = 15, height: int = 8, window_size: int = 250,
                 seed: int = 42) -> None:
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.model = compose.Pipeline(
            preprocessing.MinMaxScaler(),
            anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size,
                                   seed=seed),
        )
        self.seen = 0

    def learn_one(self, x: dict[str, float]) -> None:
        self.model.learn_one(x)
        self.seen += 1

    def score_one(self, x: dict[str, float]) -> float:
        if self.seen < self.window_size:  # still warming up: no opinion yet
            return 0.0
        return float(self.model.score_one(x))
