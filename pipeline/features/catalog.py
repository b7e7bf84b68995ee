"""The feature catalog: every key a detector's feature dict can hold, and what it means.

Detectors (built in, and those users plug in) receive one flat ``dict[str, float]`` per record,
built by :mod:`pipeline.features`:

* kind ``"transactions"`` — :meth:`AddressFeatures.update(tx) <.AddressFeatures.update>` for
  each :class:`~pipeline.records.Transaction` (token transfers only feed state, through
  :meth:`~.AddressFeatures.update_transfer`, and return no dict);
* kind ``"dex"`` — the ``x`` of :meth:`PoolFeatures.update_state(ev) <.PoolFeatures.update_state>`
  (``(state, x)``) for each :class:`~pipeline.records.DexEvent`;
* kind ``"trades"`` — :meth:`TradeFeatures.update(trade) <.TradeFeatures.update>` for each
  :class:`~pipeline.records.Trade`, an exchange's, or a DEX swap as a trade of its pool.

This module is the contract of that input: :data:`CATALOG` maps each kind to its
:class:`Feature` s in a fixed order, each with a one-sentence meaning read off the code (what it
computes, not what its name suggests), its unit, and — for a key that is not in every dict —
the condition under which it is present. ``tests/unit/test_feature_catalog.py`` runs the
synthetic chain through fresh feature stores and fails, naming the difference, when a key is
emitted that is not catalogued, when a catalogued key is never emitted, when a key said to
be always present is missing from a dict, or when a conditional one never is.
:func:`markdown` renders a kind's table for the README; :func:`names` lists its keys.

Conventions used below: "the last *n* blocks" means blocks ``b - n + 1`` … ``b`` where ``b`` is
the record's block (the record itself included); "log10 ETH" is ``log10(1 + ether)``; "first
seen" and "new" refer to the feature store's memory, which forgets a key idle for
``idle_blocks`` (50,000 by default) or pushed out beyond ``max_keys`` — a forgotten key is
new again. On the DEX side the "WETH" side of a pool is ``token0`` when it is WETH, else
``token1`` (whatever token that is), and a trader is a swap's ``to`` address (swaps without
one count for nothing but expiry). Window sizes are those of the default stores the scorer
builds (``AddressFeatures(window=...)`` and ``PoolFeatures(fresh_blocks=...)`` change them,
not the names).

>>> names("dex")[:3]
('price', 'liquidity_weth', 'drawdown')
>>> print(markdown("transactions").splitlines()[0])
| feature | meaning |
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pipeline.features.addresses import (
    LOW_QUANTILE,
    MAX_BLOCK_SAMPLES,
    SWEEP_HIGH,
    SWEEP_LOW,
    WINDOW,
    YOUNG_BLOCKS,
)
from pipeline.features.lp import MAX_HOLDERS, MINIMUM_LIQUIDITY
from pipeline.features.pools import (
    LONG,
    RETURN_WINDOWS,
    SHORT,
    SYNC_BUCKET,
    SYNC_WINDOW,
    VOLATILITY_N,
    VOLUME_TAU,
    PoolFeatures,
)
from pipeline.features.trades import (
    BASELINE_MS,
    EMA_FAST_MS,
    EMA_SLOW_MS,
    HIGH_MINUTES,
    LONG_MS,
    SHORT_MS,
)

KINDS = ("transactions", "dex", "trades")

_FRESH = inspect.signature(PoolFeatures).parameters["fresh_blocks"].default
_LOW_Q = f"{LOW_QUANTILE:.0%}"


@dataclass(frozen=True, slots=True)
class Feature:
    """One key of a feature dict: its name, one-sentence meaning, unit, and presence."""

    name: str
    meaning: str
    unit: str
    when: str | None = None
    """None when the key is in every dict of its kind; else when it is present."""

    @property
    def always(self) -> bool:
        return self.when is None


_W, _Y = WINDOW, YOUNG_BLOCKS
_TRANSACTIONS = (
    Feature("log_value", "log10(1 + the transaction's value in ether).", "log10 ETH"),
    Feature("gas_premium",
            "log10(gas price / estimated base fee), the estimate coming from the blocks seen "
            "before this one: each closed block's bound (its largest gas price - stated "
            f"priority fee, else the {_LOW_Q} quantile of up to {MAX_BLOCK_SAMPLES} gas "
            "prices of transactions without one) moves it halfway in log space "
            "(estimate <- sqrt(estimate x bound)); 0 before the first block closed or for a "
            "zero gas price.", "log10 ratio (may be < 0)"),
    Feature("sender_age",
            "log10(1 + blocks since the sender was first seen, as a sender, recipient or "
            "token-transfer party; the smallest block seen counts).", "log10 blocks"),
    Feature("sender_idle",
            "log10(1 + blocks since the sender was last seen, in any role, before this "
            "transaction), 0 for a new sender or an out-of-order record.", "log10 blocks"),
    Feature("sender_new",
            "1 when the sender is not known in any role (a first sighting, or forgotten "
            "since), else 0.", "0/1"),
    Feature("first_send",
            "1 when the sender has no transaction sent before this one (it may have received, "
            "and token transfers it sent do not count), else 0.", "0/1"),
    Feature("log_gas", "log10(1 + the gas limit).", "log10 gas"),
    Feature("log_gas_price", "log10(1 + the gas price in gwei).", "log10 gwei"),
    Feature("is_call",
            "1 when the transaction carries calldata (input is not '0x'; contract creations "
            "with init code included), else 0.", "0/1"),
    Feature("is_creation", "1 when the transaction has no recipient (a contract creation), "
            "else 0.", "0/1"),
    Feature("gas_used_ratio", "Gas used by the receipt / the gas limit.",
            "ratio (normally in [0, 1])",
            when="the receipt's gas used is known and the gas limit is not 0"),
    Feature("value_z",
            "z-score of log_value against the mean and sample standard deviation of log_value "
            "over the sender's earlier sends (this one excluded); 0 when they do not vary.",
            "standard deviations", when="the sender made at least 5 earlier sends"),
    Feature("share_of_received",
            "The value sent / all ether the sender received in transactions so far (this one "
            "excluded), capped at 10.", "ratio in [0, 10]",
            when="the sender received ether before"),
    Feature("sender_txs_10",
            f"The sender's outgoing transactions and token transfers in the last {_W} blocks, "
            "this one included.", "count"),
    Feature("fan_out_10",
            f"Distinct recipients of the sender's transactions and token transfers in the last "
            f"{_W} blocks, this one included (all contract creations count as one).", "count"),
    Feature("new_recipients_10",
            f"The sender's transactions in the last {_W} blocks, this one included, whose "
            "recipient was not known when it was sent.", "count"),
    Feature("value_out_10",
            f"log10(1 + ether the sender sent in transactions in the last {_W} blocks, this "
            "one included).", "log10 ETH"),
    Feature("fan_in_10",
            f"Distinct senders of transactions and token transfers to the sender in the last "
            f"{_W} blocks (this transaction is outgoing, so not among them).", "count"),
    Feature("novel_value",
            "log_value x the share of three signs that hold: first_send, recipient_new, and "
            f"(the sender first seen at most {_Y} blocks ago or share_of_received in "
            f"[{SWEEP_LOW}, {SWEEP_HIGH}], a sweep).", "log10 ETH"),
    Feature("novel_fan_out",
            f"new_recipients_10 when the sender was first seen at most {_Y} blocks ago, "
            "else 0.", "count"),
    Feature("recipient_new",
            "1 when the recipient was not known in any role before this transaction (a "
            "self-send's recipient is known by then), else 0.",
            "0/1", when="the transaction has a recipient (not a contract creation)"),
)

_S, _L = SHORT, LONG
_RESERVES = ("the pool has a WETH side and has had an event carrying both reserves (a pool "
             "without a WETH side is never priced)")
_LEDGER = ("the pool's launch mint (see launch_age) carried an LP amount, so its LP ledger "
           "started from zero supply, and its creator has received LP")
_DEX = (
    Feature("price",
            "WETH-side reserve / other reserve, in smallest units (WETH per token unit for an "
            "18-decimal token), after the pool's last event carrying both reserves; 0 before "
            "one.", "WETH wei per smallest token unit"),
    Feature("liquidity_weth", "The pool's WETH-side reserve after its last event carrying "
            "both reserves; 0 before one.", "WETH"),
    Feature("drawdown",
            "1 - the WETH reserve / its highest value since the pool was first seen (a "
            "liquidity drawdown, not a price one); 0 before any reserves.", "share in [0, 1]"),
    Feature("age", "Blocks since the pool was first seen (0 when out of order).", "blocks"),
    Feature("liquidity_drop_3",
            "1 - the WETH reserve / the largest WETH reserve after any event in the last 4 "
            "blocks (the block and the 3 before it; quiet blocks count at their close); 0 "
            "when no reserves are known in those blocks.", "share in [0, 1]"),
    Feature("liquidity_peak_3", "That largest WETH reserve of the last 4 blocks (see "
            "liquidity_drop_3); 0 when none is known.", "WETH"),
    Feature("price_drop_10",
            "1 - price / the highest closing price of the last 11 blocks (the block and the "
            "10 before it; quiet blocks carry the last close); 0 when no price is known in "
            "those blocks.",
            "share in [0, 1]"),
    *(Feature(f"return_{w}",
              f"price / the closing price {w} block{'s' if w > 1 else ''} ago (carried over "
              "quiet blocks) - 1.", "ratio (simple return)",
              when=f"a close is known for {w} block{'s' if w > 1 else ''} ago: the pool "
              "had a price by then, and its newest price is no older (both within 32 "
              "blocks)")
      for w in RETURN_WINDOWS),
    Feature("buys_5", f"Swaps in the last {_S} blocks that paid WETH in (buys of the token).",
            "count"),
    Feature("sells_5", f"Swaps in the last {_S} blocks that paid no WETH in (sells of the "
            "token).", "count"),
    Feature("buy_weth_5", f"WETH paid in by the buys of the last {_S} blocks.", "WETH"),
    Feature("imbalance_5",
            f"(WETH paid in by buys - WETH paid out to sells) / their sum, over the last {_S} "
            "blocks; 0 without volume.", "ratio in [-1, 1]"),
    Feature("unique_buyers_5", f"Distinct traders with a buy in the last {_S} blocks.",
            "count"),
    Feature("fresh_buyer_share_5",
            f"Share of those buyers first seen on any pool (as a swap's `to`) at most {_FRESH} "
            "blocks before their first buy in the window; 0 without buyers.", "share in [0, 1]"),
    Feature("buyer_hhi_5",
            f"Herfindahl-Hirschman concentration of WETH bought across the buyers of the last "
            f"{_S} blocks (Σ share², 1/n for n equal buyers, 1 for one); 0 without buys.",
            "index in [0, 1]"),
    Feature("trades_20", f"Swaps (buys and sells) in the last {_L} blocks.", "count"),
    Feature("traders_20", f"Distinct traders in the last {_L} blocks.", "count"),
    Feature("turnover_20",
            f"WETH volume (bought + sold) of the last {_L} blocks / the current WETH reserve; "
            "0 without reserves.", "ratio"),
    Feature("net_flow_20",
            f"|WETH bought - WETH sold| / WETH volume over the last {_L} blocks; 0 without "
            "volume.", "share in [0, 1]"),
    Feature("round_trip_share_20",
            "2 x Σ over traders of min(WETH bought, WETH sold) / WETH volume, over the last "
            f"{_L} blocks (volume bought and sold back by the same trader); 0 without volume.",
            "share in [0, 1]"),
    Feature("two_sided_20", f"Traders with both a buy and a sell in the last {_L} blocks.",
            "count"),
    Feature("volume_ratio_20",
            f"WETH volume of the last {_L} blocks / ({_L} x the pool's exponentially weighted "
            f"WETH volume per block, time constant {VOLUME_TAU:g} blocks, this window's "
            "swaps included).", "ratio",
            when=f"the pool was first seen at least {VOLUME_TAU:g} blocks ago and has traded"),
    Feature("lp_burns_20", f"Burn events (liquidity removals) in the last {_L} blocks, this "
            "one included.", "count"),
    Feature("lp_removed_weth_20", f"WETH paid out by those burns of the last {_L} blocks.",
            "WETH"),
    Feature("launch_age",
            "Blocks since the pool's launch: its first seen event, a mint stating reserve0 "
            "0 (none) or reserves equal to the amounts it put in (0 when out of order).",
            "blocks",
            when="the first event seen of the pool was such a launch mint"),
    Feature("liquidity_peak_weth",
            "The highest WETH reserve after any event carrying both reserves since the pool "
            "was first seen (the peak behind drawdown).", "WETH", when=_RESERVES),
    Feature("liquidity_growth",
            "The WETH reserve / the first nonzero WETH reserve seen of the pool.", "ratio",
            when=_RESERVES),
    Feature("price_vs_first", "price / the first nonzero price seen of the pool (computed "
            "exactly from the reserves).", "ratio", when=_RESERVES),
    Feature("price_drop_peak",
            "1 - price / the highest price since the pool was first seen (a slow dump over "
            "many blocks, which price_drop_10 misses); 0 at the peak.", "share in [0, 1]",
            when=_RESERVES),
    Feature("price_drop_peak_before",
            "The deepest price_drop_peak since that peak was set, up to the event before "
            "the newest one carrying both reserves (so a rule sees the first time a fall "
            "crosses a level, once per peak, however the price swings about it); 0 at a new "
            "peak.", "share in [0, 1]",
            when=_RESERVES),
    Feature("price_peak_age",
            "Blocks since the latest event at which the price stood at that peak (0 when "
            "out of order).", "blocks", when=_RESERVES),
    Feature("blocks_since_mint",
            "Blocks since the newest block with a mint event of the pool, this one included "
            "(0 when out of order).", "blocks", when="a mint of the pool has been seen"),
    Feature("syncs_270",
            f"Events carrying both reserves (syncs, and swaps, mints and burns stating "
            f"reserves) in the last {SYNC_WINDOW - SYNC_BUCKET + 1} to {SYNC_WINDOW} blocks "
            f"(~1 hour), counted in {SYNC_BUCKET}-block buckets: blocks from {SYNC_BUCKET} x "
            f"floor(b / {SYNC_BUCKET}) - {SYNC_WINDOW - SYNC_BUCKET} to b, this one "
            "included (for a block out of order, only buckets no older than those of the "
            "newest block's window).", "count"),
    Feature("volatility_50",
            "Sample standard deviation of the natural-log price changes between consecutive "
            f"events carrying both reserves, over the last {VOLATILITY_N} such changes.",
            "log price change", when="at least 2 such changes were seen"),
    Feature("syncs_total",
            "Events carrying both reserves of the pool since it was first seen, this one "
            "included.", "count", when=_RESERVES),
    Feature("first_liquidity_weth",
            "The first nonzero WETH reserve seen of the pool (its opening liquidity).", "WETH",
            when=_RESERVES),
    Feature("sell_share",
            "Sells / (buys + sells) since first seen, read from consecutive reserves: a buy "
            "when the WETH reserve rose and the token reserve fell, a sell the other way "
            "round (a mint or burn moves both alike and is neither); 0.5 before any.",
            "share in [0, 1]", when=_RESERVES),
    Feature("max_sell_share",
            "The largest share of the WETH reserve one such sell took out since first seen "
            "(1 - reserve after / reserve before).", "share in [0, 1]", when=_RESERVES),
    Feature("sync_gap",
            "Blocks between the newest block with an event carrying both reserves and the "
            "one before it (0 for the first); for an event without reserves, blocks since "
            "that newest one.", "blocks", when=_RESERVES),
    Feature("lp_mints",
            "Mint events of the pool since it was first seen, this one included, except the "
            f"row minting Uniswap's {MINIMUM_LIQUIDITY} units of minimum liquidity to the "
            "zero address (a pool's first LP row).", "count"),
    Feature("lp_burns",
            "Liquidity removals of the pool since it was first seen, this one included: a "
            "Burn event, or of the two LP-transfer rows of a Uniswap burn (holder -> pool, "
            "pool -> zero address) only the second; a holder's LP sent to the zero address "
            "is a lock, not counted.", "count"),
    Feature("lp_holders",
            "Addresses holding a positive LP balance, not counting the zero address, the pool, "
            "the dead address and known lockers; with more than "
            f"{MAX_HOLDERS} others only the {MAX_HOLDERS} largest (roughly) and the creator "
            "are tracked, so a lower bound then.", "count", when=_LEDGER),
    Feature("lp_creator_share",
            "The creator's LP balance / the circulating LP, the creator being the first "
            "mint's recipient other than the zero address and the pool; circulating is the LP "
            "supply less "
            "the pool's own balance (LP in flight of a burn) and the first "
            f"{MINIMUM_LIQUIDITY} units at the zero address: what holders, locked ones "
            "included, hold; 0 when none circulates.", "share in [0, 1]", when=_LEDGER),
    Feature("lp_top_share",
            "The largest LP balance of a holder counted in lp_holders / the circulating LP "
            "(see lp_creator_share).", "share in [0, 1]", when=_LEDGER),
    Feature("lp_locked_share",
            "LP held by the dead address and known lockers (UNCX, Team Finance), plus what "
            f"the zero address holds beyond its first {MINIMUM_LIQUIDITY} units (LP minted or "
            "sent there), / the circulating LP (see lp_creator_share).", "share in [0, 1]",
            when=_LEDGER),
    Feature("lp_creator_removed",
            "1 - the creator's LP balance / its highest balance so far (what the creator has "
            "sold, moved, locked or burnt of its peak holding).", "share in [0, 1]",
            when=_LEDGER),
    Feature("creator_pools",
            "Other pools whose LP creator (see lp_creator_share) is this pool's, launched in "
            "the pools this scorer reads: input is keyed by pool, so a creator's pools on "
            "other partitions are not seen.", "count", when=_LEDGER),
    Feature("creator_rugged",
            "Of those other pools, the ones whose WETH reserve or price has fallen 90 % or "
            "more below its peak (a WETH peak of at least 1 ether) by now, as the reserves "
            "show it in stream time.", "count", when=_LEDGER),
)

_S, _L = SHORT_MS // 1000, LONG_MS // 1000
_ORDER = ("an order being a run of trades with the same millisecond and side on an exchange, "
          "each swap on a DEX")
_TRADES = (
    Feature("price", "The trade's price (quote per base unit; a DEX swap's WETH per token "
            "unit of 10**18).", "quote per base"),
    Feature("trades_10", f"Trades of the market in the last {_S} s, this one included.",
            "count"),
    Feature("trades_60", f"Trades of the market in the last {_L} s.", "count"),
    Feature("buy_orders_10", f"Buy orders begun in the last {_S} s, {_ORDER}.", "count"),
    Feature("buy_orders_60", f"Buy orders begun in the last {_L} s.", "count"),
    Feature("rush_orders_10",
            f"Buy orders of the last {_S} s filled in two trades or more of the same "
            "millisecond (exchange trades only: La Morgia's rush orders).", "count"),
    Feature("rush_orders_60", f"Rush orders (see rush_orders_10) of the last {_L} s.",
            "count"),
    Feature("quote_10", f"Quote volume traded in the last {_S} s.", "quote units"),
    Feature("quote_60", f"Quote volume traded in the last {_L} s.", "quote units"),
    Feature("buy_share_10", f"Buy quote volume / quote volume of the last {_S} s (0.5 "
            "when nothing was traded).", "share in [0, 1]"),
    Feature("buy_share_60", f"Buy quote volume / quote volume of the last {_L} s.",
            "share in [0, 1]"),
    Feature("order_surge_10",
            f"buy_orders_10 / (the buy orders the market's hour before this trade would give "
            f"in {_S} s + 1), the hour being an exponentially decayed count (time constant "
            f"{BASELINE_MS // 60_000} minutes).", "ratio"),
    Feature("volume_surge_10",
            f"log10(1 + buy quote volume of the last {_S} s / what the decayed hour before "
            f"gives in {_S} s); 0 before any buy.", "log10 ratio"),
    Feature("return_10", f"The price / the price of the first trade of the last {_S} s, "
            "- 1.", "ratio - 1"),
    Feature("rise_5m", f"The price / its exponential moving average over "
            f"{EMA_FAST_MS // 60_000} minutes before this trade, - 1.", "ratio - 1"),
    Feature("rise_30m", f"The price / its exponential moving average over "
            f"{EMA_SLOW_MS // 60_000} minutes before this trade, - 1.", "ratio - 1"),
    Feature("from_high_1h", f"The price / the highest price of the {HIGH_MINUTES} minutes "
            "before this trade (per-minute highs), - 1: above 0 at a new high.", "ratio - 1"),
    Feature("volatility_1h", "Exponentially weighted standard deviation of the log price "
            f"change between trades (time constant {BASELINE_MS // 60_000} minutes).",
            "log ratio"),
    Feature("market_age", "log10(1 + seconds since the market's first trade on this "
            "scorer).", "log10 s"),
)

CATALOG: Mapping[str, tuple[Feature, ...]] = MappingProxyType(
    {"transactions": _TRANSACTIONS, "dex": _DEX, "trades": _TRADES})
"""Record kind → its features, in a fixed order (immutable)."""


def features(kind: str) -> tuple[Feature, ...]:
    """The catalogued features of ``kind`` (``"transactions"``, ``"dex"`` or ``"trades"``),
    in order."""
    try:
        return CATALOG[kind]
    except KeyError:
        raise ValueError(f"unknown record kind {kind!r}; expected one of "
                         f"{', '.join(KINDS)}") from None


def names(kind: str) -> tuple[str, ...]:
    """The feature names of ``kind``, in catalog order."""
    return tuple(f.name for f in features(kind))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(kind: str) -> str:
    """A Markdown table ``| feature | meaning |`` of ``kind``'s features, for the README.

    The meaning cell ends with the unit in italics and, for a key not in every dict, when it
    is present.
    """
    rows = ["| feature | meaning |", "| --- | --- |"]
    for f in features(kind):
        meaning = f"{f.meaning} *Unit: {f.unit}.*"
        if f.when is not None:
            meaning += f" Present only when {f.when}."
        rows.append(f"| `{f.name}` | {_cell(meaning)} |")
    return "\n".join(rows) + "\n"
