"""Wash-trading detection: a small cluster trading one pool in circles, net position ≈ 0."""

from __future__ import annotations

from typing import Any

from pipeline.detectors.base import Configurable, ramp
from pipeline.state import StateError


class WashTrading(Configurable):
    """Scores circular trading in a pool over its last 20 blocks; score in [0, 1].

    The product of saturating signals:

    * round trip: the share of the window's volume that traders bought *and* sold back
      (``round_trip_share_20``), from ``min_round_trip`` up to ``full_round_trip``;
    * cluster: traders who both bought and sold, from 1 up to ``min_two_sided``;
    * activity: swaps in the window, up to ``min_trades`` — volume well above a quiet pool;
    * balance: 1 - |WETH bought - sold| / volume — the cluster ends flat.

    Ordinary traders rarely buy and sell the same pool within 20 blocks, and when they do it
    is one or two of them, not a ring. ``learn_one`` is a no-op.

    >>> WashTrading().score_one({"round_trip_share_20": 0.7, "two_sided_20": 5.0,
    ...                          "trades_20": 40.0, "net_flow_20": 0.05})
    0.95
    """

    name = "wash_trading"
    version = "1"

    def __init__(self, min_round_trip: float = 0.3, full_round_trip: float = 0.6,
                 min_two_sided: float = 3.0, min_trades: float = 30.0) -> None:
        self.min_round_trip = min_round_trip
        self.full_round_trip = full_round_trip
        self.min_two_sided = min_two_sided
        self.min_trades = min_trades

    def learn_one(self, x: dict[str, float]) -> None:
        return None

    def state(self) -> dict[str, Any]:
        """Nothing: it learns nothing (its configuration is not state)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        if state:
            raise StateError(f"wash trading keeps no state, got keys {sorted(state)}")

    def score_one(self, x: dict[str, float]) -> float:
        get = x.get
        trip = ramp(get("round_trip_share_20", 0.0), self.min_round_trip, self.full_round_trip)
        if not trip:
            return 0.0
        cluster = ramp(get("two_sided_20", 0.0), 1.0, self.min_two_sided)
        activity = min(1.0, get("trades_20", 0.0) / self.min_trades)
        balance = 1.0 - get("net_flow_20", 1.0)
        return trip * cluster * activity * balance
