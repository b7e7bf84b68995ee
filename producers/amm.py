"""Uniswap-V2 constant-product pool arithmetic, in exact integers.

Reserves and prices follow from the trades exactly as on chain: a swap keeps
``x·y ≥ k`` after the 0.3 % fee, liquidity is minted and burned pro rata.

>>> pool = Pool(address="0x" + "01" * 20, token0="0x" + "02" * 20, token1="0x" + "03" * 20,
...             reserve0=10**21, reserve1=10**20)
>>> out = pool.swap(zero_for_one=True, amount_in=10**18)
>>> out, pool.reserve0, pool.reserve1
(99600698103990321, 1001000000000000000000, 99900399301896009679)
>>> pool.reserve0 * pool.reserve1 >= 10**21 * 10**20  # the fee makes k grow
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FEE_NUMERATOR = 997  # 0.3 % fee: 997/1000 of the input counts
FEE_DENOMINATOR = 1000
MINIMUM_LIQUIDITY = 1000


def amount_out(amount_in: int, reserve_in: int, reserve_out: int) -> int:
    """UniswapV2Library.getAmountOut."""
    if amount_in <= 0 or reserve_in <= 0 or reserve_out <= 0:
        return 0
    with_fee = amount_in * FEE_NUMERATOR
    return (with_fee * reserve_out) // (reserve_in * FEE_DENOMINATOR + with_fee)


@dataclass
class Pool:
    """A pair's mutable state. ``token1`` is the quote token (WETH) by convention here."""

    address: str
    token0: str
    token1: str
    reserve0: int
    reserve1: int
    total_supply: int = 0
    creator: str = ""

    def __post_init__(self) -> None:
        if self.total_supply == 0 and self.reserve0 and self.reserve1:
            self.total_supply = math.isqrt(self.reserve0 * self.reserve1)

    @property
    def price(self) -> float:
        """Price of token0 in token1 (both in smallest units)."""
        return self.reserve1 / self.reserve0 if self.reserve0 else 0.0

    def swap(self, zero_for_one: bool, amount_in: int) -> int:
        """Sell ``amount_in`` of token0 (or token1); returns the amount of the other out."""
        if zero_for_one:
            out = amount_out(amount_in, self.reserve0, self.reserve1)
            self.reserve0 += amount_in
            self.reserve1 -= out
        else:
            out = amount_out(amount_in, self.reserve1, self.reserve0)
            self.reserve1 += amount_in
            self.reserve0 -= out
        return out

    def mint(self, amount0: int, amount1: int) -> tuple[int, int, int]:
        """Add liquidity at the current ratio; returns (used0, used1, liquidity minted)."""
        if self.total_supply == 0:
            liquidity = math.isqrt(amount0 * amount1) - MINIMUM_LIQUIDITY
            self.total_supply = liquidity + MINIMUM_LIQUIDITY
            self.reserve0, self.reserve1 = amount0, amount1
            return amount0, amount1, max(liquidity, 0)
        used1 = amount0 * self.reserve1 // self.reserve0
        if used1 > amount1:
            used0, used1 = amount1 * self.reserve0 // self.reserve1, amount1
        else:
            used0 = amount0
        liquidity = min(used0 * self.total_supply // self.reserve0,
                        used1 * self.total_supply // self.reserve1)
        self.reserve0 += used0
        self.reserve1 += used1
        self.total_supply += liquidity
        return used0, used1, liquidity

    def burn(self, liquidity: int) -> tuple[int, int]:
        """Remove ``liquidity`` LP tokens; returns the amounts paid out."""
        liquidity = min(liquidity, self.total_supply)
        if liquidity <= 0:
            return 0, 0
        amount0 = liquidity * self.reserve0 // self.total_supply
        amount1 = liquidity * self.reserve1 // self.total_supply
        self.reserve0 -= amount0
        self.reserve1 -= amount1
        self.total_supply -= liquidity
        return amount0, amount1
