"""Pool risk: the probability that a pool will be drained or crash, learnt from outcomes.

:class:`PoolRisk` is a supervised river model on pool features. It learns ``learn_one(x, y)``
from the delayed outcomes :class:`~pipeline.scoring.outcomes.PoolOutcomes` releases in stream
time (y = 1: drained or crashed within the horizon after the snapshot ``x``; 0: survived it),
and scores every pool event with ``score_one(x)``: the model's probability, from what is known
at that moment. Before it has learnt ``min_labels`` outcomes, ``min_each`` of each kind, it
scores 0 (not warm): a cold model's 0.5 means nothing. A pool holding no WETH (none yet, or
no WETH side at all) scores 0 too.

Features are squashed with a signed ``log1p`` (counts, WETH amounts and ratios alike keep
their order and lose their tails), then standardised (river's ``StandardScaler``) into river's
aggregated Mondrian forest (the default; non-linear, and on the real uniswap-v2-2021 replay it
flags twice as many pools an hour ahead as the logistic regression does at the same false-flag
budget, at a quarter of its speed: 2.9k against 13k events/s in ``bench/rug_risk.py``) or a
logistic regression (``estimator="logistic"``).
:meth:`contributions` gives what each feature added to the risk, which an alert reports as
the features that drove it.

>>> risk = PoolRisk(features=("a",), min_labels=20, min_each=5)
>>> risk.score_one({"a": 9.0, "liquidity_weth": 5.0})
0.0
>>> for i in range(200):
...     risk.learn_one({"a": float(i % 10)}, i % 10 >= 5)
>>> high, low = {"a": 9.0, "liquidity_weth": 5.0}, {"a": 0.0, "liquidity_weth": 5.0}
>>> risk.warm, risk.score_one(high) > 0.5 > risk.score_one(low), risk.score_one({"a": 9.0})
(True, True, 0.0)
"""

from __future__ import annotations

import math
from typing import Any

from river import compose, forest, linear_model, optim, preprocessing

from pipeline.detectors.base import Configurable
from pipeline.state import fields, river_blob, river_estimator

RISK_FEATURES = (
    "age", "liquidity_weth", "liquidity_peak_weth", "liquidity_growth", "drawdown",
    "price_vs_first", "price_drop_peak", "price_peak_age", "volatility_50", "syncs_270",
    "blocks_since_mint", "lp_holders", "lp_creator_share", "lp_top_share", "lp_locked_share",
    "lp_mints", "lp_burns", "lp_creator_removed", "trades_20", "return_20", "syncs_total",
    "first_liquidity_weth", "sell_share", "max_sell_share", "sync_gap", "creator_pools",
    "creator_rugged",
)
"""What is known of a pool at an event (see :mod:`pipeline.features.catalog`): its age,
liquidity and its path (the opening liquidity too), price path and volatility, trading
activity (buys and sells read from the reserves, the gap between them), who holds its LP
tokens, and what its creator's other pools did. A feature missing from ``x`` counts as 0."""


ESTIMATORS = ("logistic", "forest")
"""``logistic``: river's LogisticRegression; ``forest``: its AMFClassifier (aggregated
Mondrian forest of ``trees`` trees, at most ``max_nodes`` nodes each)."""


def squash(value: float) -> float:
    """Signed log1p: order kept, tails tamed.

    >>> squash(0.0), round(squash(99.0), 3), round(squash(-99.0), 3)
    (0.0, 4.605, -4.605)
    """
    return math.copysign(math.log1p(abs(value)), value)


class PoolRisk(Configurable):
    """A forest (or a logistic regression) on squashed, standardised pool features; score
    in [0, 1]."""

    name = "pool_risk"
    version = "2"  # 2: the forest by default, and the creator features

    def __init__(self, *, features: tuple[str, ...] = RISK_FEATURES,
                 estimator: str = "forest",
                 learning_rate: float = 0.02, l2: float = 0.001, trees: int = 10,
                 max_nodes: int = 1_000, min_labels: int = 200, min_each: int = 20,
                 seed: int = 42) -> None:
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator {estimator!r} is not one of {', '.join(ESTIMATORS)}")
        self.features = tuple(features)
        self.estimator = estimator
        self.learning_rate = learning_rate
        self.l2 = l2
        self.trees = trees
        self.max_nodes = max_nodes
        self.min_labels = min_labels
        self.min_each = min_each
        self.seed = seed
        learner: Any
        if estimator == "logistic":
            learner = linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate), l2=l2)
        else:  # river's aggregated Mondrian forest: non-linear, calibrated, bounded
            learner = forest.AMFClassifier(n_estimators=trees, max_nodes=max_nodes, seed=seed)
        self.model: Any = compose.Pipeline(preprocessing.StandardScaler(), learner)
        self.labels = [0, 0]  # outcomes learnt: survived, drained or crashed

    @property
    def warm(self) -> bool:
        return sum(self.labels) >= self.min_labels and min(self.labels) >= self.min_each

    def _vector(self, x: dict[str, float]) -> dict[str, float]:
        get = x.get
        return {f: squash(get(f, 0.0)) for f in self.features}

    def learn_one(self, x: dict[str, float], y: bool | int) -> None:
        self.model.learn_one(self._vector(x), bool(y))
        self.labels[int(bool(y))] += 1

    def score_one(self, x: dict[str, float]) -> float:
        if not self.warm or x.get("liquidity_weth", 0.0) <= 0.0:
            return 0.0  # cold, or nothing priced in WETH (yet) to lose
        return float(self.model.predict_proba_one(self._vector(x)).get(True, 0.0))

    def contributions(self, x: dict[str, float]) -> dict[str, float]:
        """What each feature adds to the risk, largest magnitude first: for the logistic
        model its term of the log-odds (weight times standardised value); for the forest, by
        occlusion, the probability less the probability with that feature at its running
        mean (one more forest prediction per feature: it runs for alerts only)."""
        scaler, learner = self.model.steps.values()
        scaled = scaler.transform_one(self._vector(x))
        weights = getattr(learner, "weights", None)
        if weights is not None:
            terms = {f: float(weights.get(f, 0.0)) * float(v) for f, v in scaled.items()}
        else:
            def risk(values: dict[str, float]) -> float:
                return float(learner.predict_proba_one(values).get(True, 0.0))

            base = risk(scaled)
            terms = {f: base - risk(scaled | {f: 0.0}) for f in scaled}
        return dict(sorted(terms.items(), key=lambda kv: -abs(kv[1])))

    def state(self) -> dict[str, Any]:
        return {"v": 1, "model": river_blob(self.model), "labels": list(self.labels)}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "pool risk", 1, model=dict, labels=list)
        self.model = river_estimator(state["model"], "pool risk model",
                                     lambda e: isinstance(e, compose.Pipeline))
        self.labels = [int(n) for n in state["labels"]]
