"""Per-pool features from the DEX stream: price, returns, flow, crowd, liquidity, LP holders.

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
``liquidity_peak_weth``    running peak of the WETH reserve, in ether
``liquidity_growth``       WETH reserve / the first nonzero WETH reserve seen
``price_vs_first``         price / the first nonzero price seen (exact, from the reserves)
``price_drop_peak``        1 - price / its running peak since first seen (a slow dump);
                           ``price_drop_peak_before`` its deepest value since that peak
                           was set, before the newest event
``price_peak_age``         blocks since the price last stood at that peak
``blocks_since_mint``      blocks since the last mint, once one was seen
``syncs_270``              events carrying reserves in the last 261-270 blocks (10-block
                           buckets, ≈ 1 h)
``volatility_50``          sample std of log price changes between consecutive events
                           carrying reserves, over the last 50 changes (at least 2)
``lp_mints``, ``lp_burns``  mints (but the 1000-unit minimum-liquidity row) and liquidity
                           removals since first seen; a two-row Uniswap burn (holder → pool,
                           pool → zero address) counts once, a holder's LP sent to the zero
                           address (a lock) not at all
``lp_holders``             LP holders with a positive balance (of at most 64 tracked, plus
                           the creator), locked and pool addresses excluded
``lp_creator_share``       creator's LP / circulating LP (supply less the pool's in-flight
                           LP and the zero address's first 1000 units; locked LP included)
``lp_top_share``           largest holder's LP / circulating LP
``lp_locked_share``        LP of the dead address and lockers, plus the zero address's
                           beyond 1000 units, / circulating LP
``lp_creator_removed``     1 - creator's LP / its peak
``creator_pools``          the creator's other pools seen by this scorer; ``creator_rugged``
                           how many of them lost 90 % of their peak WETH reserve or price
=========================  ==================================================================

The LP keys (``lp_holders`` … ``lp_creator_removed``) come from
:class:`~pipeline.features.lp.LpLedger`, which reads every LP row (mint, burn and transfer
rows carrying ``liquidity``) of a pool whose launch mint carried an LP amount, and holds its
approximations (64 balances per pool) and its list of lockers. The trajectory keys are exact
comparisons of integer reserves, floats only once computed; everything is O(1) amortised per
event and bounded per pool (27 buckets, a ring of 50 log changes, 64 balances).

A :class:`PoolState` saves layout 3 (the trajectory, the LP ledger, the creator flags); a
checkpoint of an earlier layout is refused with a StateError, so a task restored from one
starts its features fresh.

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
from array import array
from typing import Any

from pipeline.features.lp import MINIMUM_LIQUIDITY, LpLedger
from pipeline.features.store import KeyedStore, Seen
from pipeline.features.windows import BlockRing, TradeWindow
from pipeline.records import ZERO_ADDRESS, DexEvent
from pipeline.state import StateError, fields

WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
ETHER = 1e18
RETURN_WINDOWS = (1, 3, 5, 10, 20)
SHORT, LONG = 5, 20
VOLUME_TAU = 200.0  # blocks: time constant of a pool's usual volume
SYNC_WINDOW, SYNC_BUCKET = 270, 10  # blocks (~1 h), counted in 10-block buckets
_SYNC_SLOTS = SYNC_WINDOW // SYNC_BUCKET
VOLATILITY_N = 50  # log price changes in volatility_50
LP_KINDS = frozenset({"mint", "burn", "transfer"})
RUGGED = 0.9  # a pool whose WETH reserve or price fell this far below its peak was rugged
CREATOR_MEMORY = 10  # a creator is kept 10x longer than a pool without news of it


class PoolState:
    """Running state of one pool (see :class:`PoolFeatures`)."""

    __slots__ = ("burns", "counted", "drop_before", "first_block", "first_token", "first_weth",
                 "flow", "has_weth", "last_block", "launch_block", "ledger", "liquidity",
                 "log_returns", "long", "lp_burns", "lp_mints", "max_sell", "mint_block",
                 "peak_block",
                 "peak_liquidity", "peak_token", "peak_weth", "price", "prices",
                 "reserve_token", "reserves", "returns_head", "returns_sq", "returns_sum",
                 "short", "sync_bucket", "syncs", "vol_block", "vol_rate", "weth_is_0")

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
        # trajectory since first seen; reserves (so prices, as WETH/token pairs) exact ints
        self.reserve_token = 0  # token reserve after the last event carrying reserves
        self.first_weth = self.first_token = 0  # the first nonzero reserves
        self.peak_weth = self.peak_token = 0  # the reserves at the highest price
        self.peak_block = -1
        self.mint_block = -1  # the newest block with a mint
        self.lp_mints = self.lp_burns = 0
        self.syncs = [0] * _SYNC_SLOTS  # events with reserves per 10-block bucket (a ring)
        self.sync_bucket = -1  # the newest bucket written
        self.log_returns = array("d")  # the last VOLATILITY_N log price changes (a ring)
        self.returns_head = 0  # the oldest entry once the ring is full
        self.returns_sum = self.returns_sq = 0.0  # their sum and sum of squares
        self.ledger: LpLedger | None = None  # LP holders, when the launch was seen
        self.has_weth = True  # a side is WETH: else nothing is priced
        # from the reserves alone (a Sync tells a buy from a sell by which reserve rose):
        # events with reserves, buys, sells, the block of the last event with reserves and
        # the blocks between it and the one before
        self.flow = [0, 0, 0, -1, 0]
        self.max_sell = 0.0  # the largest share of the WETH reserve one sell took out
        self.drop_before = 0.0  # deepest price_drop_peak since the peak, before the newest event
        # counted in its creator's record: [as one of its pools, as one of its rugged pools]
        self.counted = [False, False]

    def state(self) -> dict[str, Any]:
        """Scalars as they are (reserves in exact wei), rings and windows by their own state.

        Layout 2 added the trajectory and the LP ledger, layout 3 the creator flags; a
        checkpoint of an older layout is refused (StateError), so a task restored from one
        starts its features fresh.
        """
        return {"v": 3, "counted": list(self.counted),
                "blocks": [self.first_block, self.last_block, self.launch_block,
                           self.vol_block, self.peak_block, self.mint_block],
                "weth_is_0": self.weth_is_0, "price": self.price, "liquidity": self.liquidity,
                "peak_liquidity": self.peak_liquidity, "vol_rate": self.vol_rate,
                "prices": self.prices.state(), "reserves": self.reserves.state(),
                "short": self.short.state(), "long": self.long.state(),
                "burns": [list(b) for b in self.burns],
                "reserve_token": self.reserve_token,
                "first": [self.first_weth, self.first_token],
                "peak": [self.peak_weth, self.peak_token],
                "lp_counts": [self.lp_mints, self.lp_burns],
                "syncs": {"bucket": self.sync_bucket, "counts": list(self.syncs)},
                "returns": {"values": list(self.log_returns), "head": self.returns_head,
                            "sum": self.returns_sum, "sq": self.returns_sq},
                "ledger": None if self.ledger is None else self.ledger.state(),
                "has_weth": self.has_weth, "flow": list(self.flow), "max_sell": self.max_sell,
                "drop_before": self.drop_before}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "pool", 3, counted=list, blocks=list, weth_is_0=bool, price=float,
               liquidity=int, peak_liquidity=int, vol_rate=float, prices=dict, reserves=dict,
               short=dict, long=dict, burns=list, reserve_token=int, first=list, peak=list,
               lp_counts=list, syncs=dict, returns=dict, ledger=(dict, type(None)),
               has_weth=bool, flow=list, max_sell=float, drop_before=float)
        returns = state["returns"]
        try:
            (self.first_block, self.last_block, self.launch_block, self.vol_block,
             self.peak_block, self.mint_block) = (int(b) for b in state["blocks"])
            burns = [(int(b), int(w), str(i)) for b, w, i in state["burns"]]
            self.first_weth, self.first_token = (int(v) for v in state["first"])
            self.peak_weth, self.peak_token = (int(v) for v in state["peak"])
            self.lp_mints, self.lp_burns = (int(v) for v in state["lp_counts"])
            sync_bucket = int(state["syncs"]["bucket"])
            syncs = [int(n) for n in state["syncs"]["counts"]]
            log_returns = array("d", (float(v) for v in returns["values"]))
            head, total, sq = int(returns["head"]), float(returns["sum"]), float(returns["sq"])
            flow = [int(v) for v in state["flow"]]
            counted = [bool(v) for v in state["counted"]]
        except (TypeError, ValueError, KeyError) as exc:
            raise StateError(f"pool state does not fit: {exc}") from exc
        if len(log_returns) > VOLATILITY_N or not 0 <= head < VOLATILITY_N \
                or len(syncs) != _SYNC_SLOTS:
            raise StateError("pool state does not fit: rings longer than their bounds")
        if len(flow) != 5 or len(counted) != 2:
            raise StateError("pool state does not fit: flow counters or creator flags")
        self.counted = counted
        self.has_weth, self.flow, self.max_sell = state["has_weth"], flow, state["max_sell"]
        self.drop_before = state["drop_before"]
        self.weth_is_0, self.price = state["weth_is_0"], float(state["price"])
        self.liquidity, self.peak_liquidity = state["liquidity"], state["peak_liquidity"]
        self.vol_rate, self.burns = float(state["vol_rate"]), burns
        self.reserve_token, self.syncs = state["reserve_token"], syncs
        self.sync_bucket = sync_bucket
        self.log_returns, self.returns_head = log_returns, head
        self.returns_sum, self.returns_sq = total, sq
        for name in ("prices", "reserves", "short", "long"):
            getattr(self, name).load_state(state[name])
        self.ledger = None
        if state["ledger"] is not None:
            self.ledger = LpLedger()
            self.ledger.load_state(state["ledger"])


class Creator:
    """What the pools of one LP creator did, as far as this scorer saw them."""

    __slots__ = ("last_block", "pools", "rugged")

    def __init__(self, block: int) -> None:
        self.last_block = block
        self.pools = 0  # pools it launched
        self.rugged = 0  # of them, pools that have lost RUGGED of their peak WETH or price

    def state(self) -> dict[str, Any]:
        return {"v": 1, "last_block": self.last_block, "pools": self.pools,
                "rugged": self.rugged}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "creator", 1, last_block=int, pools=int, rugged=int)
        self.last_block, self.pools, self.rugged = (state["last_block"], state["pools"],
                                                    state["rugged"])


class PoolFeatures:
    """Per-pool state for every pool seen, plus first sightings of traders (fresh wallets).

    And the record of each LP creator (:class:`Creator`): the pools it launched and how many
    of them were rugged, kept ``CREATOR_MEMORY`` times longer than a pool. The maps are
    bounded :class:`~pipeline.features.store.KeyedStore` s; :attr:`evictions` sums their
    evictions. A scorer sees the pools of its partitions only (input is keyed by pool), so a
    creator's pools elsewhere do not count.
    """

    def __init__(self, max_pools: int = 20_000, max_wallets: int = 100_000,
                 idle_blocks: int = 50_000, fresh_blocks: int = 3,
                 max_creators: int = 50_000) -> None:
        self.max_pools = max_pools
        self.max_wallets = max_wallets
        self.max_creators = max_creators
        self.idle_blocks = idle_blocks
        self.fresh_blocks = fresh_blocks
        self.pools: KeyedStore[PoolState] = KeyedStore(PoolState, max_pools, idle_blocks)
        self.wallets: KeyedStore[Seen] = KeyedStore(Seen, max_wallets, idle_blocks)
        self.creators: KeyedStore[Creator] = self._creator_store()

    def _creator_store(self) -> KeyedStore[Creator]:
        return KeyedStore(Creator, self.max_creators, self.idle_blocks * CREATOR_MEMORY)

    @property
    def evictions(self) -> int:
        return self.pools.evictions + self.wallets.evictions + self.creators.evictions

    def state(self) -> dict[str, Any]:
        """The stores, keys in recency order with their eviction counts."""
        return {"v": 2, "pools": self.pools.state(), "wallets": self.wallets.state(),
                "creators": self.creators.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "pool features", 2, pools=dict, wallets=dict, creators=dict)
        pools: KeyedStore[PoolState] = KeyedStore(PoolState, self.max_pools, self.idle_blocks)
        wallets: KeyedStore[Seen] = KeyedStore(Seen, self.max_wallets, self.idle_blocks)
        creators = self._creator_store()
        pools.load_state(state["pools"])
        wallets.load_state(state["wallets"])
        creators.load_state(state["creators"])
        self.pools, self.wallets, self.creators = pools, wallets, creators

    def update(self, ev: DexEvent) -> dict[str, float]:
        """Fold ``ev`` into its pool's state and return the pool's features after it."""
        return self.update_state(ev)[1]

    def update_state(self, ev: DexEvent) -> tuple[PoolState, dict[str, float]]:
        block = ev.block_number
        new = ev.pool_address not in self.pools
        st = self.pools.get(ev.pool_address, block)
        if new:
            _open(st, ev)
        w0 = st.weth_is_0
        reserve_weth, reserve_token = (ev.reserve0, ev.reserve1) if w0 else (ev.reserve1,
                                                                            ev.reserve0)
        if reserve_weth and reserve_token and st.has_weth:
            _flow(st, block, reserve_weth, reserve_token)
            close = float(st.liquidity)  # the reserve before this event
            before = st.price
            st.price = reserve_weth / reserve_token
            _trajectory(st, block, reserve_weth, reserve_token, before)
            st.liquidity = reserve_weth
            st.peak_liquidity = max(st.peak_liquidity, reserve_weth)
            st.prices.set(block, st.price)
            peak = st.reserves.at(block) if st.reserves.block == block else None
            st.reserves.set(block, max(float(reserve_weth), peak or 0.0), carry=close)
        kind = ev.kind
        if kind == "mint":
            st.mint_block = max(st.mint_block, block)
            if not (new and ev.to == ZERO_ADDRESS and ev.liquidity == MINIMUM_LIQUIDITY):
                st.lp_mints += 1  # not Uniswap's minimum-liquidity row of a first mint
        elif kind == "burn" and _a_removal(ev):
            st.lp_burns += 1
        if new and st.launch_block >= 0 and ev.liquidity:
            st.ledger = LpLedger()  # the launch carries LP amounts: the ledger is complete
        if st.ledger is not None and kind in LP_KINDS:
            st.ledger.apply(kind, ev.sender, ev.to, ev.liquidity, ev.pool_address)
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
        return st, self._creator(st, block, self._features(st, block))

    def _creator(self, st: PoolState, block: int, x: dict[str, float]) -> dict[str, float]:
        """Count the pool in its creator's record (once it has a creator), and as rugged once
        its WETH reserve or price is ``RUGGED`` below its peak (a peak of at least 1 WETH);
        then ``creator_pools`` / ``creator_rugged``: the creator's other pools, and how many
        of them were rugged, into ``x``."""
        creator = st.ledger.creator if st.ledger is not None else None
        if creator is None:
            return x
        record = self.creators.get(creator, block)
        if not st.counted[0]:
            st.counted[0] = True
            record.pools += 1
        if not st.counted[1] and st.peak_liquidity >= ETHER and (
                st.liquidity <= (1.0 - RUGGED) * st.peak_liquidity
                or x.get("price_drop_peak", 0.0) >= RUGGED):
            st.counted[1] = True
            record.rugged += 1
        x["creator_pools"] = float(record.pools - 1)
        x["creator_rugged"] = float(record.rugged - st.counted[1])
        return x

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
        _risk_features(st, block, x)
        return x


def _risk_features(st: PoolState, block: int, x: dict[str, float]) -> None:
    """The trajectory since first seen and the LP holder structure, into ``x``."""
    if st.first_weth:
        weth, token = st.liquidity, st.reserve_token
        x["liquidity_peak_weth"] = st.peak_liquidity / ETHER
        x["liquidity_growth"] = weth / st.first_weth
        x["price_vs_first"] = weth * st.first_token / (token * st.first_weth)
        x["price_drop_peak"] = max(1.0 - weth * st.peak_token / (token * st.peak_weth), 0.0)
        x["price_drop_peak_before"] = st.drop_before
        x["price_peak_age"] = float(max(block - st.peak_block, 0))
    if st.mint_block >= 0:
        x["blocks_since_mint"] = float(max(block - st.mint_block, 0))
    hi, newest = block // SYNC_BUCKET, st.sync_bucket  # the ring holds newest - 26 … newest
    lo, top = max(hi, newest) - _SYNC_SLOTS + 1, min(hi, newest)
    x["syncs_270"] = float(sum(st.syncs[b % _SYNC_SLOTS] for b in range(lo, top + 1)))
    n = len(st.log_returns)
    if n >= 2:
        mean = st.returns_sum / n
        x["volatility_50"] = math.sqrt(max(st.returns_sq - st.returns_sum * mean, 0.0)
                                       / (n - 1))
    syncs, buys, sells, last, gap = st.flow
    if syncs:
        x["syncs_total"] = float(syncs)
        x["first_liquidity_weth"] = st.first_weth / ETHER
        x["sell_share"] = sells / (buys + sells) if buys + sells else 0.5
        x["max_sell_share"] = st.max_sell
        x["sync_gap"] = float(gap if last == block else max(block - last, 0))
    x["lp_mints"] = float(st.lp_mints)
    x["lp_burns"] = float(st.lp_burns)
    if st.ledger is not None:
        x.update(st.ledger.features())


def _a_removal(ev: DexEvent) -> bool:
    """Whether a burn row is a liquidity removal to count once: a Burn event (``to`` got the
    tokens), or of the two Transfer rows of a Uniswap burn (holder -> pool, pool -> zero
    address) the second; a holder's LP sent to the zero address is a lock, not a removal."""
    if ev.to in (ZERO_ADDRESS, ev.pool_address):
        return ev.sender == ev.pool_address
    return True


def _open(st: PoolState, ev: DexEvent) -> None:
    """A pool's first event: which side is WETH (if any), and whether it is its launch."""
    st.weth_is_0 = ev.token0 == WETH
    st.has_weth = WETH in (ev.token0, ev.token1)
    if ev.kind == "mint" and (not ev.reserve0 or (
            ev.reserve0 == ev.amount0_in and ev.reserve1 == ev.amount1_in)):
        st.launch_block = ev.block_number  # the pool's first liquidity: a launch we saw


def _flow(st: PoolState, block: int, weth: int, token: int) -> None:
    """Count an event with reserves ``weth``/``token`` (called before ``st`` takes them): a
    buy when WETH came in and tokens went out, a sell the other way round (a mint or burn
    moves both alike and is neither); the largest sell's share of the WETH reserve; and the
    deepest fall of the price below its running peak before this event."""
    flow = st.flow
    before_weth, before_token = st.liquidity, st.reserve_token
    if st.peak_weth and before_token:  # the deepest fall below the peak, before this event
        st.drop_before = max(1.0 - before_weth * st.peak_token / (before_token * st.peak_weth),
                             st.drop_before)
    if flow[0] and before_weth and before_token:
        if weth > before_weth and token < before_token:
            flow[1] += 1
        elif weth < before_weth and token > before_token:
            flow[2] += 1
            st.max_sell = max(st.max_sell, 1.0 - weth / before_weth)
    flow[0] += 1
    if block > flow[3]:
        flow[4] = block - flow[3] if flow[3] >= 0 else 0
        flow[3] = block


def _trajectory(st: PoolState, block: int, weth: int, token: int, before: float) -> None:
    """Fold reserves ``weth``/``token`` (both nonzero) of ``block`` into the running first
    and peak prices, the 10-block buckets of reserve events and the ring of log changes."""
    st.reserve_token = token
    if not st.first_weth:
        st.first_weth, st.first_token = weth, token
    if st.peak_block < 0 or weth * st.peak_token >= st.peak_weth * token:
        st.peak_weth, st.peak_token, st.peak_block = weth, token, block
        st.drop_before = 0.0  # a new peak: no fall below it yet
    bucket, newest, syncs = block // SYNC_BUCKET, st.sync_bucket, st.syncs
    if bucket > newest:
        for b in range(max(newest + 1, bucket - _SYNC_SLOTS + 1), bucket + 1):
            syncs[b % _SYNC_SLOTS] = 0  # buckets gone by, or never written
        st.sync_bucket = newest = bucket
    if bucket > newest - _SYNC_SLOTS:  # else a block out of order, older than the ring
        syncs[bucket % _SYNC_SLOTS] += 1
    if before > 0:
        change = math.log(st.price / before)
        ring = st.log_returns
        if len(ring) < VOLATILITY_N:
            ring.append(change)
            st.returns_sum += change
            st.returns_sq += change * change
        else:
            old = ring[st.returns_head]
            ring[st.returns_head] = change
            st.returns_head = (st.returns_head + 1) % VOLATILITY_N
            if st.returns_head:
                st.returns_sum += change - old
                st.returns_sq += change * change - old * old
            else:  # once a lap, recount: no drift from adding and taking away
                st.returns_sum = math.fsum(ring)
                st.returns_sq = math.fsum(v * v for v in ring)
