"""Rug-pull / liquidity-drain detection: most of a pool's WETH gone within a few blocks."""

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
    it fires on the draining event itself: within the drain's block. ``learn_one`` is a no-op.

    >>> LiquidityDrain().score_one({"liquidity_drop_3": 0.97, "liquidity_peak_3": 20.0})
    0.97
    >>> LiquidityDrain().score_one({"liquidity_drop_3": 1.0, "liquidity_peak_3": 0.01})
    0.0
    """

    name = "liquidity_drain"
    version = "1"

    def __init__(self, min_liquidity_weth: float = 1.0) -> None:
        self.min_liquidity_weth = min_liquidity_weth

    def learn_one(self, x: dict[str, float]) -> None:
        return None

    def state(self) -> dict[str, Any]:
        """Nothing: it learns nothing (its configuration is not state)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        if state:
            raise StateError(f"liquidity drain keeps no state, got keys {sorted(state)}")

    def score_one(self, x: dict[str, float]) -> float:
        drop = x.get("liquidity_drop_3", 0.0)
        if drop <= 0.0 or x.get("liquidity_peak_3", 0.0) < self.min_liquidity_weth:
            return 0.0
        return min(drop, 1.0)
