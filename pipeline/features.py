"""Incremental per-pool and per-address features.

Each window keeps only the last ``horizon`` blocks of a key, so memory is bounded by the
number of active keys; :class:`AddressBook` remembers when each address was first seen.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from pipeline.records import DexEvent, Transaction

WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"


class AddressBook:
    """First block each address was seen in, to tell fresh wallets from known ones."""

    def __init__(self) -> None:
        self.first_seen: dict[str, int] = {}

    def observe(self, address: str, block: int) -> int:
        """Record a sighting; return the block the address was first seen in."""
        return self.first_seen.setdefault(address, block)


@dataclass
class _Trade:
    block: int
    buy: bool
    trader: str
    weth: int
    fresh: bool


@dataclass
class PoolWindow:
    """Recent trades and prices of one pool."""

    horizon: int = 30
    prices: deque[tuple[int, float]] = field(default_factory=deque)
    trades: deque[_Trade] = field(default_factory=deque)
    peak_liquidity: int = 0

    def update(self, ev: DexEvent, fresh_trader: bool) -> dict[str, float]:
        weth_is_0 = ev.token0 == WETH
        reserve_weth, reserve_token = ((ev.reserve0, ev.reserve1) if weth_is_0
                                       else (ev.reserve1, ev.reserve0))
        price = reserve_weth / reserve_token if reserve_token else 0.0
        block = ev.block_number
        if not self.prices or self.prices[-1][0] != block:
            self.prices.append((block, price))
        else:
            self.prices[-1] = (block, price)
        if ev.kind == "swap" and ev.to:
            weth_in = ev.amount0_in if weth_is_0 else ev.amount1_in
            weth_out = ev.amount0_out if weth_is_0 else ev.amount1_out
            buy = weth_in > 0
            self.trades.append(_Trade(block, buy, ev.to, weth_in if buy else weth_out,
                                      fresh_trader))
        self.peak_liquidity = max(self.peak_liquidity, reserve_weth)
        while self.prices and self.prices[0][0] < block - self.horizon:
            self.prices.popleft()
        while self.trades and self.trades[0].block < block - self.horizon:
            self.trades.popleft()
        return self._features(block, price, reserve_weth)

    def _price_at_or_before(self, block: int) -> float:
        best = self.prices[0][1]
        for b, p in self.prices:
            if b > block:
                break
            best = p
        return best

    def _features(self, block: int, price: float, liquidity: int) -> dict[str, float]:
        feats: dict[str, float] = {"price": price,
                                   "liquidity_weth": liquidity / 1e18,
                                   "drawdown": 1 - liquidity / self.peak_liquidity
                                   if self.peak_liquidity else 0.0}
        for w in (5, 20):
            before = self._price_at_or_before(block - w)
            feats[f"return_{w}"] = price / before - 1 if before else 0.0
        recent = [t for t in self.trades if t.block > block - 5]
        buys = [t for t in recent if t.buy]
        buyers = {t.trader for t in buys}
        fresh = {t.trader for t in buys if t.fresh}
        feats["buys_5"] = float(len(buys))
        feats["sells_5"] = float(len(recent) - len(buys))
        feats["unique_buyers_5"] = float(len(buyers))
        feats["fresh_buyer_share_5"] = len(fresh) / len(buyers) if buyers else 0.0
        return feats


def transaction_features(tx: Transaction, first_seen: int) -> dict[str, float]:
    """Scale-free features of one transfer, for the anomaly detector."""
    return {
        "log_value_eth": math.log10(1 + tx.value / 1e18),
        "log_gas_price_gwei": math.log10(1 + tx.gas_price / 1e9),
        "log_gas": math.log10(tx.gas),
        "is_creation": float(tx.to_address is None),
        "log_age_blocks": math.log10(1 + tx.block_number - first_seen),
    }
