"""Per-pool features from the DEX stream: price, returns, flow, crowd, liquidity, LP removals.

:class:`PoolFeatures` turns each :class:`~pipeline.records.DexEvent` into a flat
``dict[str, float]`` about its pool, updating O(1) running state per event. The WETH side of
a pool is ``token0`` when it is WETH, else ``token1``; the price is WETH per token unit from
the reserves after the event. Rows without reserves (mint, burn and LP-transfer rows replayed
from the uniswap-v2 dataset carry none) never move price or liquidity.

Features (a key is absent when it cannot be known yet, e.g. a return before its window has
history):

=========================  ==================================================================
``price``, ``liquidity_weth``  last price; WETH reserve in ether
``drawdown``               1 - WETH reserve / its running peak
``liquidity_drop_3``       1 - WETH reserve / the largest reserve of the last 3 blocks
``liquidity_peak_3``       that largest reserve, in ether
``price_drop_10``          1 - price / the highest close of the last 10 blocks
``return_{1,3,5,10,20}``   price / close ``w`` blocks ago - 1
``buys_5``, ``sells_5``    swaps in the last 5 blocks; ``buy_weth_5`` in ether
``imbalance_5``            (WETH bought - sold) / volume, in [-1, 1]
``unique_buyers_5``        distinct buyers; ``fresh_buyer_share_5`` of them first seen ≤
                           ``fresh_blocks`` earlier; ``buyer_hhi_5`` concentration of WETH
``trades_20``, ``traders_20``, ``turnover_20`` (volume / reserve) over 20 blocks
``net_flow_20``            |WETH bought - sold| / volume
``round_trip_share_20``    2·Σ min(bought, sold) per trader / volume (buy-and-sell-back)
``two_sided_20``           traders who both bought and sold
``volume_ratio_20``        volume / the pool's usual 20-block volume (after a warm-up)
``lp_burns_20``, ``lp_removed_weth_20``  liquidity removals and the WETH they took
``age``                    blocks since the pool was first seen
``launch_age``             blocks since its launch, when the launch (first mint) was seen
=========================  ==================================================================

Blocks may come out of order (the same chain produced twice, a late event): ages clamp
at 0, a block older than a ring's newest leaves the ring as it is, and the usual-volume
decay only ever runs forward, so nothing overflows or fails later.

>>> from pipeline.records import DexEvent
>>> pools, weth, tok = PoolFeatures(), WETH, "0x" + "22" * 20
>>> def ev(block, kind, r0, r1, **kw):
...     return DexEvent(pool_address="0x" + "11" * 20, token0=tok, token1=weth, kind=kind,
...         block_number=block, block_timestamp=block * 12, transaction_hash="0x" + "ab" * 32,
...         log_index=block, reserve0=r0, reserve1=r1, **kw)
>>> x = pools.update(ev(1, "mint", 10**24, 10**20, amount0_in=10**24, amount1_in=10**20))
>>> x["launch_age"], x["liquidity_weth"]
(0.0, 100.0)
>>> x = pools.update(ev(2, "swap", 9 * 10**23, 2 * 10**20, amount1_in=10**20,
...                     amount0_out=10**23, to="0x" + "33" * 20))
>>> round(x["return_1"], 3), x["buys_5"], x["fresh_buyer_share_5"]
(1.222, 1.0, 1.0)
>>> pools.update(ev(3, "burn", 0, 0, liquidity=5))["price"] == x["price"]  # no reserves
True
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.features.store import KeyedStore, Seen
from pipeline.features.windows import BlockRing, TradeWindow
from pipeline.records import DexEvent
from pipeline.state import StateError, fields

WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
ETHER = 1e18
RETURN_WINDOWS = (1, 3, 5, 10, 20)
SHORT, LONG = 5, 20
VOLUME_TAU = 200.0  # blocks: time constant of a pool's usual volume


class PoolState:
    """Running state of one pool (see :class:`PoolFeatures`)."""

    __slots__ = ("burns", "first_block", "last_block", "launch_block", "liquidity", "long",
                 "peak_liquidity", "price", "prices", "reserves", "short", "vol_block",
                 "vol_rate", "weth_is_0")

    def __init__(self, block: int) -> None:
        self.first_block = self.last_block = block
        self.launch_block = -1
        self.weth_is_0 = False
        self.price = 0.0
        self.liquidity = 0  # WETH reserve, wei
        self.peak_liquidity = 0
        self.prices = BlockRing(32)  # closing price per block
        self.reserves = BlockRing(8)  # largest WETH reserve per block (quiet ones: the close)
        self.short = TradeWindow(SHORT)
        self.long = TradeWindow(LONG)
        self.burns: list[tuple[int, int, str]] = []  # (block, WETH out, item id), LONG blocks
        self.vol_rate = 0.0  # exponentially weighted WETH volume per block
        self.vol_block = block

    def state(self) -> dict[str, Any]:
        """Scalars as they are (reserves in exact wei), rings and windows by their own state."""
        return {"v": 1,
                "blocks": [self.first_block, self.last_block, self.launch_block,
                           self.vol_block],
                "weth_is_0": self.weth_is_0, "price": self.price, "liquidity": self.liquidity,
                "peak_liquidity": self.peak_liquidity, "vol_rate": self.vol_rate,
                "prices": self.prices.state(), "reserves": self.reserves.state(),
                "short": self.short.state(), "long": self.long.state(),
                "burns": [list(b) for b in self.burns]}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "pool", 1, blocks=list, weth_is_0=bool, price=float, liquidity=int,
               peak_liquidity=int, vol_rate=float, prices=dict, reserves=dict, short=dict,
               long=dict, burns=list)
        try:
            (self.first_block, self.last_block, self.launch_block,
             self.vol_block) = (int(b) for b in state["blocks"])
            burns = [(int(b), int(w), str(i)) for b, w, i in state["burns"]]
        except (TypeError, ValueError) as exc:
            raise StateError(f"pool state does not fit: {exc}") from exc
        self.weth_is_0, self.price = state["weth_is_0"], float(state["price"])
        self.liquidity, self.peak_liquidity = state["liquidity"], state["peak_liquidity"]
        self.vol_rate, self.burns = float(state["vol_rate"]), burns
        for name in ("prices", "reserves", "short", "long"):
            getattr(self, name).load_state(state[name])


class PoolFeatures:
    """Per-pool state for every pool seen, plus first sightings of traders (fresh wallets).

    Both maps are bounded :class:`~pipeline.features.store.KeyedStore` s; :attr:`evictions`
    sums their evictions.
    """

    def __init__(self, max_pools: int = 20_000, max_wallets: int = 100_000,
                 idle_blocks: int = 50_000, fresh_blocks: int = 3) -> None:
        self.max_pools = max_pools
        self.max_wallets = max_wallets
        self.idle_blocks = idle_blocks
        self.fresh_blocks = fresh_blocks
        self.pools: KeyedStore[PoolState] = KeyedStore(PoolState, max_pools, idle_blocks)
        self.wallets: KeyedStore[Seen] = KeyedStore(Seen, max_wallets, idle_blocks)

    @property
    def evictions(self) -> int:
        return self.pools.evictions + self.wallets.evictions

    def state(self) -> dict[str, Any]:
        """Both stores, keys in recency order with their eviction counts."""
        return {"v": 1, "pools": self.pools.state(), "wallets": self.wallets.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "pool features", 1, pools=dict, wallets=dict)
        pools: KeyedStore[PoolState] = KeyedStore(PoolState, self.max_pools, self.idle_blocks)
        wallets: KeyedStore[Seen] = KeyedStore(Seen, self.max_wallets, self.idle_blocks)
        pools.load_state(state["pools"])
        wallets.load_state(state["wallets"])
        self.pools, self.wallets = pools, wallets

    def update(self, ev: DexEvent) -> dict[str, float]:
        """Fold ``ev`` into its pool's state and return the pool's features after it."""
        return self.update_state(ev)[1]

    def update_state(self, ev: DexEvent) -> tuple[PoolState, dict[str, float]]:
        block = ev.block_number
        new = ev.pool_address not in self.pools
        st = self.pools.get(ev.pool_address, block)
        if new:
            st.weth_is_0 = ev.token0 == WETH
            if ev.kind == "mint" and (not ev.reserve0 or (
                    ev.reserve0 == ev.amount0_in and ev.reserve1 == ev.amount1_in)):
                st.launch_block = block  # the pool's first liquidity: a launch we saw
        w0 = st.weth_is_0
        reserve_weth, reserve_token = (ev.reserve0, ev.reserve1) if w0 else (ev.reserve1,
                                                                            ev.reserve0)
        if reserve_weth and reserve_token:
            close = float(st.liquidity)  # the reserve before this event
            st.price = reserve_weth / reserve_token
            st.liquidity = reserve_weth
            st.peak_liquidity = max(st.peak_liquidity, reserve_weth)
            st.prices.set(block, st.price)
            peak = st.reserves.at(block) if st.reserves.block == block else None
            st.reserves.set(block, max(float(reserve_weth), peak or 0.0), carry=close)
        kind = ev.kind
        if kind == "swap" and ev.to:
            weth_in = ev.amount0_in if w0 else ev.amount1_in
            buy = weth_in > 0
            weth = weth_in if buy else (ev.amount0_out if w0 else ev.amount1_out)
            seen = self.wallets.get(ev.to, block)
            fresh = block - seen.first_block <= self.fresh_blocks
            item = ev.item_id
            st.short.add(block, ev.to, buy, weth, fresh=fresh, item_id=item)
            st.long.add(block, ev.to, buy, weth, fresh=fresh, item_id=item)
            if block > st.vol_block:
                st.vol_rate *= math.exp((st.vol_block - block) / VOLUME_TAU)
                st.vol_block = block
            st.vol_rate += weth / VOLUME_TAU
        else:
            st.short.expire(block)
            st.long.expire(block)
            if kind == "burn":
                st.burns.append((block, ev.amount0_out if w0 else ev.amount1_out, ev.item_id))
        if st.burns and st.burns[0][0] <= block - LONG:
            st.burns = [b for b in st.burns if b[0] > block - LONG]
        return st, self._features(st, block)

    def _features(self, st: PoolState, block: int) -> dict[str, float]:
        price, liq = st.price, st.liquidity
        short, long = st.short, st.long
        x: dict[str, float] = {
            "price": price,
            "liquidity_weth": liq / ETHER,
            "drawdown": 1.0 - liq / st.peak_liquidity if st.peak_liquidity else 0.0,
            "age": float(max(block - st.first_block, 0)),
        }
        recent_peak = st.reserves.max_since(block - 3)
        x["liquidity_drop_3"] = 1.0 - liq / recent_peak if recent_peak > 0 else 0.0
        x["liquidity_peak_3"] = recent_peak / ETHER
        high = st.prices.max_since(block - 10)
        x["price_drop_10"] = 1.0 - price / high if high > 0 else 0.0
        prices = st.prices
        for w in RETURN_WINDOWS:
            before = prices.at(block - w)
            if before:
                x[f"return_{w}"] = price / before - 1.0
        volume5 = short.buy_weth + short.sell_weth
        x["buys_5"] = float(short.buys)
        x["sells_5"] = float(short.sells)
        x["buy_weth_5"] = short.buy_weth / ETHER
        x["imbalance_5"] = (short.buy_weth - short.sell_weth) / volume5 if volume5 else 0.0
        x["unique_buyers_5"] = float(short.buyers)
        x["fresh_buyer_share_5"] = short.fresh_buyers / short.buyers if short.buyers else 0.0
        x["buyer_hhi_5"] = short.hhi()
        volume = long.buy_weth + long.sell_weth
        x["trades_20"] = float(long.buys + long.sells)
        x["traders_20"] = float(len(long.traders))
        x["turnover_20"] = volume / liq if liq else 0.0
        x["net_flow_20"] = abs(long.buy_weth - long.sell_weth) / volume if volume else 0.0
        x["round_trip_share_20"] = 2.0 * long.round_trip / volume if volume else 0.0
        x["two_sided_20"] = float(long.two_sided)
        if block - st.first_block >= VOLUME_TAU and st.vol_rate > 0:
            usual = st.vol_rate * math.exp(min(st.vol_block - block, 0) / VOLUME_TAU) * LONG
            x["volume_ratio_20"] = volume / usual
        x["lp_burns_20"] = float(len(st.burns))
        x["lp_removed_weth_20"] = sum(b[1] for b in st.burns) / ETHER
        if st.launch_block >= 0:
            x["launch_age"] = float(max(block - st.launch_block, 0))
        return x
