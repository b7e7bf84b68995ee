"""Pump detection: a fast price rise bought by many fresh wallets, before any dump."""

from __future__ import annotations


class PumpPhase:
    """Scores the pump phase of a pump-and-dump from pool window features.

    The score is the product of three saturating signals in [0, 1]: the 5-block return
    against ``min_return``, the share of buyers that are fresh wallets, and the number of
    distinct buyers against ``min_buyers``. It needs no training; ``learn_one`` is a no-op
    kept for the common interface.

    >>> PumpPhase().score_one({"return_5": 0.3, "fresh_buyer_share_5": 1.0,
    ...                        "unique_buyers_5": 8.0})
    1.0
    """

    name = "pump_phase"
    version = "1"

    def __init__(self, min_return: float = 0.15, min_buyers: float = 5.0) -> None:
        self.min_return = min_return
        self.min_buyers = min_buyers

    def learn_one(self, x: dict[str, float]) -> None:
        return None

    def score_one(self, x: dict[str, float]) -> float:
        rise = min(1.0, max(0.0, x.get("return_5", 0.0)) / self.min_return)
        fresh = x.get("fresh_buyer_share_5", 0.0)
        crowd = min(1.0, x.get("unique_buyers_5", 0.0) / self.min_buyers)
        return rise * fresh * crowd
