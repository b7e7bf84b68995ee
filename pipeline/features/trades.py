"""Trade features: per market (or stream), over windows of seconds and baselines of an hour.

:class:`TradeFeatures` folds one :class:`~pipeline.records.Trade` at a time into its market's
:class:`MarketState` and returns the features of the market after it. Exchange trades and DEX
swaps (:func:`trade_from_swap`) are the same thing here, so one pump detector serves both.

Windows are in stream time, milliseconds of the trades' timestamps:

* two sliding windows, :data:`SHORT_MS` (10 s) and :data:`LONG_MS` (60 s), kept as running
  sums over a deque of their trades (each at most :data:`MAX_WINDOW_TRADES` trades: past that,
  the oldest leave early, so a frenzy costs bounded memory and time);
* hour-long baselines as exponentially decayed sums (:data:`BASELINE_MS` time constant): buy
  orders, trades and quote volume per second, and exponential moving averages of the price
  over 5 and 30 minutes, updated with the time since the last trade;
* the highest price of the last hour, from per-minute highs (:data:`HIGH_MINUTES` of them,
  as a monotonic queue).

An *order* is a run of trades of one taker order: on an exchange, consecutive trades with the
same millisecond and side (one market order filled against several makers — the "rush
orders" of La Morgia et al. 2020 are buy orders filled in two trades or more); on a DEX,
every swap of its own (a transaction each). Surges compare a short window with what the hour
before would have given in as long a time, plus one, so a market's first minutes already have
a baseline of zero, not a division by nothing.

>>> f = TradeFeatures()
>>> def trade(ms, side="buy", price=1.0):
...     return Trade.from_dict({"venue": "x", "market": "A/B", "side": side, "price": price,
...                             "amount": 1.0, "quote_volume": price, "timestamp": ms})
>>> x = {}
>>> for i in range(30):  # quiet: one trade a minute
...     x = f.update(trade(1_600_000_000_000 + 60_000 * i))
>>> for i in range(40):  # then 40 buy orders within 4 s, the price up 20 %
...     x = f.update(trade(1_600_001_800_000 + 100 * i, price=1.0 + 0.005 * i))
>>> x["buy_orders_10"], round(x["order_surge_10"], 1), round(x["rise_30m"], 3)
(40.0, 34.1, 0.195)
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from pipeline.features.store import KeyedStore
from pipeline.records import DexEvent, Trade
from pipeline.state import StateError, fields

SHORT_MS = 10_000
LONG_MS = 60_000
BASELINE_MS = 3_600_000
EMA_FAST_MS = 300_000
EMA_SLOW_MS = 1_800_000
HIGH_MINUTES = 60
MAX_WINDOW_TRADES = 4096
IDLE_S = 86_400  # a market without a trade for a day is forgotten
MAX_MARKETS = 20_000
WEI = 10**18

# the running sums of a window: trades, buy orders, rush (multi-fill) buy orders, quote, buy quote
_N, _ORDERS, _RUSH, _QUOTE, _BUY_QUOTE = range(5)


class Window:
    """The trades of the last ``span_ms`` with running sums (see the module docstring)."""

    __slots__ = ("entries", "span_ms", "sums")

    def __init__(self, span_ms: int) -> None:
        self.span_ms = span_ms
        self.entries: deque[tuple[int, int, int, float, float, float]] = deque()
        self.sums = [0, 0, 0, 0.0, 0.0]

    def add(self, entry: tuple[int, int, int, float, float, float]) -> None:
        """Add one trade: (ms, new buy order 0/1, rush order 0/1, quote, buy quote, price)."""
        entries, sums = self.entries, self.sums
        ms, order, rush, quote, buy_quote, _ = entry
        entries.append(entry)
        sums[_N] += 1
        sums[_ORDERS] += order
        sums[_RUSH] += rush
        sums[_QUOTE] += quote
        sums[_BUY_QUOTE] += buy_quote
        horizon = ms - self.span_ms
        while entries and (entries[0][0] <= horizon or len(entries) > MAX_WINDOW_TRADES):
            _, o, r, q, b, _ = entries.popleft()
            sums[_N] -= 1
            sums[_ORDERS] -= o
            sums[_RUSH] -= r
            sums[_QUOTE] -= q
            sums[_BUY_QUOTE] -= b
        if not entries:
            sums[_QUOTE] = sums[_BUY_QUOTE] = 0.0  # no float residue once empty

    def open_price(self) -> float:
        """The price of the window's first trade."""
        return self.entries[0][5] if self.entries else 0.0

    def state(self) -> dict[str, Any]:
        return {"v": 1, "entries": [list(e) for e in self.entries]}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "trade window", 1, entries=list)
        self.entries.clear()
        self.sums = [0, 0, 0, 0.0, 0.0]
        for entry in state["entries"]:
            if not (isinstance(entry, list) and len(entry) == 6):
                raise StateError("trade window state: an entry is not 6 values")
            ms, order, rush, quote, buy_quote, price = entry
            self.add((int(ms), int(order), int(rush), float(quote), float(buy_quote),
                      float(price)))


class MarketState:
    """Running state of one market (see :class:`TradeFeatures`); ``last_block`` is the unix
    second of its newest trade (what the :class:`KeyedStore` expires it by)."""

    __slots__ = ("buy_orders", "buy_quote", "ema_fast", "ema_slow", "first_ms", "highs",
                 "last_block", "last_ms", "last_order", "last_price", "long", "order_size",
                 "quote", "short", "trades", "var")

    def __init__(self, second: int) -> None:
        self.last_block = second
        self.first_ms = self.last_ms = -1
        self.short, self.long = Window(SHORT_MS), Window(LONG_MS)
        self.buy_orders = self.trades = self.quote = self.buy_quote = 0.0  # decayed sums
        self.ema_fast = self.ema_slow = self.last_price = 0.0
        self.var = 0.0  # exponentially weighted variance of log price changes
        self.highs: deque[tuple[int, float]] = deque()  # (minute, highest price)
        self.last_order: tuple[int, str, str] = (-1, "", "")  # (ms, side, taker or tx)
        self.order_size = 0  # trades in the current order

    def state(self) -> dict[str, Any]:
        return {"v": 1, "times": [self.last_block, self.first_ms, self.last_ms],
                "decayed": [self.buy_orders, self.trades, self.quote, self.buy_quote],
                "prices": [self.ema_fast, self.ema_slow, self.last_price, self.var],
                "highs": [list(h) for h in self.highs], "order": [*self.last_order,
                                                                   self.order_size],
                "short": self.short.state(), "long": self.long.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "market state", 1, times=list, decayed=list, prices=list, highs=list,
               order=list, short=dict, long=dict)
        try:
            self.last_block, self.first_ms, self.last_ms = (int(v) for v in state["times"])
            self.buy_orders, self.trades, self.quote, self.buy_quote = (
                float(v) for v in state["decayed"])
            self.ema_fast, self.ema_slow, self.last_price, self.var = (
                float(v) for v in state["prices"])
            self.highs = deque((int(m), float(p)) for m, p in state["highs"])
            ms, side, who, size = state["order"]
            self.last_order, self.order_size = (int(ms), str(side), str(who)), int(size)
        except (TypeError, ValueError) as exc:
            raise StateError(f"market state: {exc}") from None
        self.short.load_state(state["short"])
        self.long.load_state(state["long"])


class TradeFeatures:
    """Per-market trade features (the kind ``"trades"`` of :mod:`pipeline.features.catalog`).

    Markets are keyed by :attr:`Trade.key <pipeline.records.Trade.key>` in a
    :class:`KeyedStore` of at most ``max_markets``, forgotten after ``idle_s`` seconds
    without a trade.
    """

    def __init__(self, max_markets: int = MAX_MARKETS, idle_s: int = IDLE_S) -> None:
        self.markets: KeyedStore[MarketState] = KeyedStore(MarketState, max_markets, idle_s)

    def update(self, trade: Trade) -> dict[str, float]:
        return self.update_state(trade)[1]

    def state(self) -> dict[str, Any]:
        return {"v": 1, "markets": self.markets.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "trade features", 1, markets=dict)
        self.markets.load_state(state["markets"])

    def update_state(self, trade: Trade) -> tuple[MarketState, dict[str, float]]:
        """Fold ``trade`` into its market; (the market's state, its features after it)."""
        ms = trade.timestamp
        st = self.markets.get(trade.key, ms // 1000)
        price, quote, buy = trade.price, trade.quote_volume, trade.side == "buy"
        if st.first_ms < 0:
            st.first_ms = st.last_ms = ms
            st.ema_fast = st.ema_slow = st.last_price = price
        dt = max(0, ms - st.last_ms)  # out of order: no decay, no time passes
        if dt:
            decay = math.exp(-dt / BASELINE_MS)
            st.buy_orders *= decay
            st.trades *= decay
            st.quote *= decay
            st.buy_quote *= decay
        # the baselines as they were before this trade: what the windows are compared with
        expect_orders = st.buy_orders * SHORT_MS / BASELINE_MS
        expect_quote = st.buy_quote * SHORT_MS / BASELINE_MS
        ema_fast, ema_slow, high = st.ema_fast, st.ema_slow, _hour_high(st, ms)
        # orders: a new one unless the same millisecond, side and taker (or transaction)
        who = trade.taker or trade.transaction_hash or ""
        same = (trade.transaction_hash is None and st.last_order == (ms, trade.side, who))
        st.order_size = st.order_size + 1 if same else 1
        st.last_order = (ms, trade.side, who)
        new_buy = int(buy and not same)
        rush = int(buy and st.order_size == 2 and trade.transaction_hash is None)
        buy_quote = quote if buy else 0.0
        entry = (ms, new_buy, rush, quote, buy_quote, price)
        st.short.add(entry)
        st.long.add(entry)
        # then the baselines and prices take this trade in
        st.buy_orders += new_buy
        st.trades += 1
        st.quote += quote
        st.buy_quote += buy_quote
        if st.last_price > 0 and price > 0:
            change = math.log(price / st.last_price)
            weight = 1.0 - math.exp(-max(dt, 1) / BASELINE_MS)
            st.var += weight * (change * change - st.var)
        st.ema_fast += (1.0 - math.exp(-dt / EMA_FAST_MS)) * (price - st.ema_fast)
        st.ema_slow += (1.0 - math.exp(-dt / EMA_SLOW_MS)) * (price - st.ema_slow)
        _note_high(st, ms, price)
        st.last_price = price
        st.last_ms = max(st.last_ms, ms)
        return st, _features(st, price, ema_fast=ema_fast, ema_slow=ema_slow, high=high,
                             expect_orders=expect_orders, expect_quote=expect_quote)


def _features(st: MarketState, price: float, *, ema_fast: float, ema_slow: float, high: float,
              expect_orders: float, expect_quote: float) -> dict[str, float]:
    short, long = st.short.sums, st.long.sums
    buy_orders = float(short[_ORDERS])
    return {
        "price": price,
        "trades_10": float(short[_N]),
        "trades_60": float(long[_N]),
        "buy_orders_10": buy_orders,
        "buy_orders_60": float(long[_ORDERS]),
        "rush_orders_10": float(short[_RUSH]),
        "rush_orders_60": float(long[_RUSH]),
        "quote_10": short[_QUOTE],
        "quote_60": long[_QUOTE],
        "buy_share_10": _share(short[_BUY_QUOTE], short[_QUOTE]),
        "buy_share_60": _share(long[_BUY_QUOTE], long[_QUOTE]),
        "order_surge_10": buy_orders / (expect_orders + 1.0),
        "volume_surge_10": math.log10(1.0 + short[_BUY_QUOTE] / expect_quote)
        if expect_quote > 0 else 0.0,
        "return_10": price / st.short.open_price() - 1.0,
        "rise_5m": price / ema_fast - 1.0 if ema_fast > 0 else 0.0,
        "rise_30m": price / ema_slow - 1.0 if ema_slow > 0 else 0.0,
        "from_high_1h": price / high - 1.0 if high > 0 else 0.0,
        "volatility_1h": math.sqrt(st.var),
        "market_age": math.log10(1.0 + max(0, st.last_ms - st.first_ms) / 1000),
    }


def _share(part: float, whole: float) -> float:
    """part / whole in [0, 1] (running float sums may overshoot by rounding); 0.5 when
    nothing was traded."""
    return min(1.0, max(0.0, part / whole)) if whole > 0 else 0.5


def _hour_high(st: MarketState, ms: int) -> float:
    """The highest price of the hour before ``ms`` (0 before the market's first trade).

    ``highs`` is a monotonic queue of per-minute highs: minutes ascending, prices strictly
    descending (a minute whose high a later minute beats can never be the hour's high
    again), so the front is the hour's high and each trade costs O(1) amortised."""
    horizon = ms // 60_000 - HIGH_MINUTES
    highs = st.highs
    while highs and highs[0][0] <= horizon:
        highs.popleft()
    return highs[0][1] if highs else 0.0


def _note_high(st: MarketState, ms: int, price: float) -> None:
    minute = ms // 60_000
    highs = st.highs
    if highs and highs[-1][0] > minute:  # out of order: count it in the newest minute
        minute = highs[-1][0]
    while highs and highs[-1][1] <= price:
        highs.pop()
    if not highs or highs[-1][0] < minute:
        highs.append((minute, price))
    # else: an entry of this minute with a higher price is already there


def trade_from_swap(ev: DexEvent, weth_is_0: bool, venue: str = "dex") -> Trade | None:
    """A DEX swap as a trade of its pool's market: the token against the pool's WETH side
    (``weth_is_0``: token0 is WETH), bought when WETH went in; price in WETH per token and
    amounts in whole units of 10**18 (the decimals are not on chain records: prices compare
    with themselves, which is all the features need). None for a swap moving nothing."""
    weth_in, weth_out = (ev.amount0_in, ev.amount0_out) if weth_is_0 else (ev.amount1_in,
                                                                          ev.amount1_out)
    token_in, token_out = (ev.amount1_in, ev.amount1_out) if weth_is_0 else (ev.amount0_in,
                                                                            ev.amount0_out)
    buy = weth_in > 0 and token_out > 0
    weth, token = (weth_in, token_out) if buy else (weth_out, token_in)
    if weth <= 0 or token <= 0:
        return None
    return Trade(venue=venue, market=ev.pool_address, side="buy" if buy else "sell",
                 price=weth / token, amount=token / WEI, quote_volume=weth / WEI,
                 timestamp=ev.block_timestamp * 1000, taker=ev.to, pool_address=ev.pool_address,
                 block_number=ev.block_number, transaction_hash=ev.transaction_hash,
                 log_index=ev.log_index)
