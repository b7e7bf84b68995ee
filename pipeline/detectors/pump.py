"""Pump detection: on pool features (:class:`PumpPhase`: a fast price rise bought by a crowd
of fresh wallets, before any dump) and on trade features (:class:`PumpBurst`: a burst of buy
orders and a rising price on any market, an exchange's or a DEX pool's)."""

from __future__ import annotations

import math
from typing import Any

from river import compose, linear_model, optim, preprocessing

from pipeline.detectors.base import Configurable, ramp
from pipeline.state import StateError, fields, river_blob, river_estimator

PHASES = ("quiet", "accumulation", "pump", "dump")


class PumpPhase(Configurable):
    """Scores the pump phase of a pump-and-dump from pool features; score in [0, 1].

    The phase of a pool (:meth:`phase`) is read from its features: ``dump`` once the price
    fell ``max_pullback`` below its 10-block high, ``pump`` while the price rises with net
    buying, ``accumulation`` while buying is steady without a price move, else ``quiet``.
    Only the pump phase scores: the product of saturating signals in [0, 1]:

    * rise: the 3- or 5-block return against ``min_return``;
    * crowd: distinct buyers in 5 blocks, from 2 up to ``min_buyers``, and the effective
      number of buyers (1 / HHI of WETH bought), from 1 up to ``min_effective_buyers`` — many
      similar buyers, not one whale;
    * freshness: the share of buyers first seen just before, against ``min_fresh_share``;
    * flow: the buy/sell imbalance (WETH bought - sold over volume).

    Pools launched in the stream less than ``young_blocks`` ago score 0: a new token's launch
    hype is the rug-pull detector's business. It needs no training; ``learn_one`` is a no-op
    kept for the common interface.

    >>> x = {"return_3": 0.3, "return_5": 0.4, "unique_buyers_5": 9.0, "buyer_hhi_5": 0.15,
    ...      "fresh_buyer_share_5": 1.0, "imbalance_5": 0.95, "price_drop_10": 0.0}
    >>> PumpPhase().score_one(x), PumpPhase().phase(x)
    (0.95, 'pump')
    >>> PumpPhase().score_one(x | {"price_drop_10": 0.2}), PumpPhase().phase(x | {"launch_age": 9})
    (0.0, 'pump')
    """

    name = "pump_phase"
    version = "2"

    def __init__(self, *, min_return: float = 0.2, min_buyers: float = 7.0,
                 min_effective_buyers: float = 4.0, min_fresh_share: float = 0.7,
                 max_pullback: float = 0.05, young_blocks: int = 300) -> None:
        self.min_return = min_return
        self.min_buyers = min_buyers
        self.min_effective_buyers = min_effective_buyers
        self.min_fresh_share = min_fresh_share
        self.max_pullback = max_pullback
        self.young_blocks = young_blocks

    def learn_one(self, x: dict[str, float]) -> None:
        return None

    def state(self) -> dict[str, Any]:
        """Nothing: it learns nothing (its configuration is not state)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        if state:
            raise StateError(f"pump phase keeps no state, got keys {sorted(state)}")

    def phase(self, x: dict[str, float]) -> str:
        get = x.get
        if get("price_drop_10", 0.0) >= self.max_pullback:
            return "dump"
        rise = max(get("return_3", 0.0), get("return_5", 0.0))
        imbalance = get("imbalance_5", 0.0)
        if rise >= self.min_return / 4 and imbalance > 0:
            return "pump"
        if imbalance > 0.3 and get("unique_buyers_5", 0.0) >= 3:
            return "accumulation"
        return "quiet"

    def score_one(self, x: dict[str, float]) -> float:
        get = x.get
        if get("launch_age", self.young_blocks) < self.young_blocks:
            return 0.0
        if get("price_drop_10", 0.0) >= self.max_pullback:
            return 0.0  # already dumping: too late to warn
        rise = ramp(max(get("return_3", 0.0), get("return_5", 0.0)), 0.0, self.min_return)
        if not rise:
            return 0.0
        hhi = get("buyer_hhi_5", 0.0)
        effective = 1.0 / hhi if hhi > 0 else 0.0
        crowd = (ramp(get("unique_buyers_5", 0.0), 2.0, self.min_buyers)
                 * ramp(effective, 1.0, self.min_effective_buyers))
        fresh = min(1.0, get("fresh_buyer_share_5", 0.0) / self.min_fresh_share)
        flow = max(0.0, get("imbalance_5", 0.0))
        return rise * crowd * fresh * flow


MODEL_FEATURES = ("order_surge_10", "volume_surge_10", "rush_orders_10", "buy_orders_10",
                  "buy_share_10", "buy_share_60", "return_10", "rise_5m", "rise_30m",
                  "from_high_1h", "volatility_1h", "market_age")


class PumpBurst(Configurable):
    """Scores the start of a pump on a market from its trade features; score in [0, 1).

    The burst rule needs no training, so it works from a market's first minutes. It has two
    paths, each with a strength that is the weakest of its signals as a multiple of its
    target; ``s`` is the stronger path's:

    * the rush — a Telegram group's members market-buying within seconds of the
      announcement: buy orders of the last 10 s against what the hour before would have
      given in 10 s (``order_surge_10`` / ``min_surge``), the price above its 30-minute
      moving average (``rise_30m`` / ``min_rise``), the buyers' share of the quote volume of
      the last 10 s (``buy_share_10`` / ``min_buy_share``);
    * the run-up — a pump bought over minutes rather than seconds (a DEX pool's pump, block
      by block): the price above its 5-minute average (``rise_5m`` / ``min_run``), the
      buyers' share of the last minute (``buy_share_60`` / ``min_run_buy_share``) and its buy
      orders (``buy_orders_60`` / ``min_run_orders``).

    The burst score is ``1 - 2 ** -s``: 0.5 when every signal of a path just meets its
    target, more the further its weakest is past it. A market seen for less than ``young_s``
    seconds scores 0: a new token's launch hype is the rug-pull detectors' business.

    A logistic regression (river, scaled inputs) learns from labelled pumps: the scorer
    teaches it :meth:`learn_one(x, y) <learn_one>` with the features of each candidate
    moment (a burst score of at least ``candidate``) once the market's label says whether a
    pump was announced there (prequentially: a candidate is learnt only after it was scored).
    Once it has learnt ``min_positives`` pumps and as many non-pumps, the score is the burst
    score times ``0.5 + p`` (p, its probability of a pump; capped below 1): a confident model
    lifts a weaker burst over the threshold and holds back a burst that looks like ordinary
    trading it has seen.

    >>> x = {"order_surge_10": 40.0, "rise_30m": 0.1, "buy_share_10": 0.9, "market_age": 4.0}
    >>> round(PumpBurst().score_one(x), 3)  # the weakest: flow, 1.5 times its target
    0.646
    >>> PumpBurst().score_one(x | {"rise_30m": 0.0})
    0.0
    """

    name = "pump_burst"
    version = "1"

    def __init__(self, *, min_surge: float = 20.0, min_rise: float = 0.03,
                 min_buy_share: float = 0.6, min_run: float = 0.3,
                 min_run_buy_share: float = 0.8, min_run_orders: float = 10.0,
                 young_s: float = 600.0, candidate: float = 0.3, min_positives: int = 5,
                 learning_rate: float = 0.05) -> None:
        self.min_surge = min_surge
        self.min_rise = min_rise
        self.min_buy_share = min_buy_share
        self.min_run = min_run
        self.min_run_buy_share = min_run_buy_share
        self.min_run_orders = min_run_orders
        self.young_s = young_s
        self.candidate = candidate
        self.min_positives = min_positives
        self.learning_rate = learning_rate
        self.model = self._new_model()
        self.counts = [0, 0]  # non-pumps, pumps learnt

    def _new_model(self) -> Any:
        return compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(optimizer=optim.SGD(self.learning_rate)))

    @property
    def warm(self) -> bool:
        """Whether the model has learnt enough pumps and non-pumps to weigh in."""
        return min(self.counts) >= self.min_positives

    def burst(self, x: dict[str, float]) -> float:
        """The rule's score alone (no model): the stronger of its two paths."""
        get = x.get
        if 10.0 ** get("market_age", 0.0) - 1.0 < self.young_s:
            return 0.0
        flow = get("buy_share_10", 0.0) / self.min_buy_share
        rush = min(get("order_surge_10", 0.0) / self.min_surge,
                   get("rise_30m", 0.0) / self.min_rise, flow)
        run = min(get("rise_5m", 0.0) / self.min_run, get("buy_share_60", 0.0)
                  / self.min_run_buy_share, get("buy_orders_60", 0.0) / self.min_run_orders)
        strength = max(rush, run)
        if strength <= 0.0:
            return 0.0
        return 1.0 - float(2.0 ** -min(strength, 50.0))

    def probability(self, x: dict[str, float]) -> float | None:
        """The model's probability of a pump, or None while it is not warm."""
        if not self.warm:
            return None
        proba = self.model.predict_proba_one(_model_input(x))
        return float(proba.get(True, 0.0))

    def score_one(self, x: dict[str, float]) -> float:
        score = self.burst(x)
        if score < self.candidate or not self.warm:
            return score
        p = self.probability(x)
        return min(score * (0.5 + (p or 0.0)), 0.999)

    def learn_one(self, x: dict[str, float], y: int | None = None) -> None:
        """Learn one labelled candidate (``y`` = 1: a pump); without a label, nothing."""
        if y is None:
            return
        self.model.learn_one(_model_input(x), bool(y))
        self.counts[1 if y else 0] += 1

    def state(self) -> dict[str, Any]:
        return {"v": 1, "model": river_blob(self.model), "counts": list(self.counts)}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "pump burst", 1, model=dict, counts=list)
        self.model = river_estimator(state["model"], "pump burst",
                                     lambda e: isinstance(e, compose.Pipeline))
        counts = state["counts"]
        if len(counts) != 2 or not all(type(c) is int and c >= 0 for c in counts):
            raise StateError("pump burst state: counts is not two counts")
        self.counts = list(counts)


def _model_input(x: dict[str, float]) -> dict[str, float]:
    """The model's features, heavy-tailed ones on a log scale."""
    out = {}
    for name in MODEL_FEATURES:
        value = x.get(name, 0.0)
        out[name] = math.log1p(max(value, 0.0)) if name in _LOG_SCALED else value
    return out


_LOG_SCALED = frozenset({"order_surge_10", "rush_orders_10", "buy_orders_10"})
