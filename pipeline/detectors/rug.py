"""Rug-pull detection: most of a pool's WETH gone within a few blocks, or its price dumped."""

from __future__ import annotations

from typing import Any

from pipeline.detectors.base import Configurable
from pipeline.state import StateError


class LiquidityDrain(Configurable):
    """Scores how much of a pool's WETH reserve vanished over the last 3 blocks; in [0, 1].

    The score is ``liquidity_drop_3`` (1 - reserve / the largest reserve of the last 3
    blocks), whether the WETH left through an LP burn or through a sale of a token hoard into
    the pool, and 0 for pools whose reserve before the drop (``liquidity_peak_3``) was under
    ``min_liquidity_weth`` (dust pools drain and refill all the time). It needs no history, so
    it fires on the draining event itself: within the drain's block.

    A slow dump drains nothing at once: a hoard sold into the pool over many blocks takes the
    price down while the WETH reserve falls gradually. So the event at which the price first
    falls ``crash_drop`` (90 %) or more below its running peak (``price_drop_peak`` crossing
    it while ``price_drop_peak_before``, the deepest fall since that peak, was under) scores
    ``price_drop_peak`` too, in pools whose WETH reserve once reached ``min_liquidity_weth``
    (``liquidity_peak_weth``). That is once per peak: a price swinging about the level after
    the dump does not fire again at every swing back under it (version 2 did, every
    cool-down, long after the crash).

    A drain scores 0 in a pool drained before: when its reserve before the drop
    (``liquidity_peak_3``) is under ``min_share_of_peak`` (10 %) of the largest it ever held
    (``liquidity_peak_weth``), the rug happened earlier and the dust leaving now is no news
    (its price may still crash, which the slow-dump path scores).
    ``learn_one`` is a no-op.

    >>> LiquidityDrain().score_one({"liquidity_drop_3": 0.97, "liquidity_peak_3": 20.0})
    0.97
    >>> LiquidityDrain().score_one({"liquidity_drop_3": 1.0, "liquidity_peak_3": 0.01})
    0.0
    >>> slow = {"liquidity_drop_3": 0.1, "liquidity_peak_3": 5.0, "liquidity_peak_weth": 30.0,
    ...         "price_drop_peak": 0.92, "price_drop_peak_before": 0.88}
    >>> LiquidityDrain().score_one(slow), LiquidityDrain().score_one(
    ...     slow | {"price_drop_peak_before": 0.91})  # crossed already: drained of news
    (0.92, 0.1)
    >>> LiquidityDrain().score_one({"liquidity_drop_3": 0.97, "liquidity_peak_3": 20.0,
    ...                             "liquidity_peak_weth": 300.0})  # 20 of 300 were left
    0.0
    """

    name = "liquidity_drain"
    version = "3"

    def __init__(self, min_liquidity_weth: float = 1.0, crash_drop: float = 0.9,
                 min_share_of_peak: float = 0.1) -> None:
        self.min_liquidity_weth = min_liquidity_weth
        self.crash_drop = crash_drop
        self.min_share_of_peak = min_share_of_peak

    def learn_one(self, x: dict[str, float]) -> None:
        return None

    def state(self) -> dict[str, Any]:
        """Nothing: it learns nothing (its configuration is not state)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        if state:
            raise StateError(f"liquidity drain keeps no state, got keys {sorted(state)}")

    def score_one(self, x: dict[str, float]) -> float:
        get = x.get
        drop, before = get("liquidity_drop_3", 0.0), get("liquidity_peak_3", 0.0)
        if drop <= 0.0 or before < self.min_liquidity_weth \
                or before < self.min_share_of_peak * get("liquidity_peak_weth", 0.0):
            drop = 0.0  # dust, or what is left of a pool drained before
        crash = get("price_drop_peak", 0.0)
        if crash < self.crash_drop or get("price_drop_peak_before", 1.0) >= self.crash_drop \
                or get("liquidity_peak_weth", 0.0) < self.min_liquidity_weth:
            crash = 0.0
        return min(max(drop, crash), 1.0)
