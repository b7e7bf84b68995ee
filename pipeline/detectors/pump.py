"""Pump detection: a fast price rise bought by a crowd of fresh wallets, before any dump."""

from __future__ import annotations

from typing import Any

from pipeline.detectors.base import Configurable, ramp
from pipeline.state import StateError

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
