"""The feature catalog is true: the keys the feature stores emit per record kind are exactly
the catalogued ones, the always-present ones are in every dict, and the conditional ones are
sometimes missing (so their ``when`` is not a lie either)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

import pytest

from pipeline.features import AddressFeatures, PoolFeatures
from pipeline.features.addresses import WINDOW
from pipeline.features.catalog import CATALOG, KINDS, Feature, features, markdown, names
from pipeline.features.pools import LONG, RETURN_WINDOWS, SHORT, SYNC_WINDOW, VOLATILITY_N, WETH
from pipeline.features.trades import TradeFeatures, trade_from_swap
from pipeline.records import DexEvent, TokenTransfer, Trade, Transaction
from producers.synth import SynthConfig, SyntheticChain

SEEDS = (3, 11, 29)
BLOCKS = 260  # past the 200-block warm-up of volume_ratio_20
CAMPAIGNS = dict.fromkeys(("pump_and_dump", "rug_pull", "wash_trading", "anomalous_transfer"),
                          8.0)
Dicts = tuple[tuple[dict[str, float], ...], tuple[dict[str, float], ...],
              tuple[dict[str, float], ...]]


def _hand_made(addresses: AddressFeatures) -> list[dict[str, float]]:
    """Branches the synthetic chain never takes: token transfers (they feed state and return
    nothing), a contract creation (no recipient) and a transaction without a receipt."""
    a, b, c = ("0x" + d * 40 for d in "abc")

    def tx(block: int, sender: str, to: str | None, i: int, **kw: int) -> Transaction:
        return Transaction(hash="0x" + f"{block:031x}{i:033x}", nonce=i, block_number=block,
                           block_timestamp=block * 12, transaction_index=i, from_address=sender,
                           to_address=to, value=10**18, gas=21_000, gas_price=30 * 10**9,
                           input="0x60806040" if to is None else "0x", **kw)

    transfer = TokenTransfer(token_address="0x" + "d" * 40, from_address=a, to_address=b,
                             value=5, transaction_hash="0x" + "e" * 64, log_index=0,
                             block_number=1)
    addresses.update_transfer(transfer)
    return [addresses.update(tx(2, a, None, 0, receipt_gas_used=20_000)),
            addresses.update(tx(3, b, c, 1))]


def _hand_made_dex(pools: PoolFeatures) -> list[dict[str, float]]:
    """The uniswap-v2 replay's shape, which the synthetic chain never takes: LP-token Transfer
    rows without reserves (the first mint's minimum liquidity to the zero address, the
    creator's mint, a move between holders, a two-row burn) around Sync rows."""
    pool, token, zero = "0x" + "77" * 20, "0x" + "88" * 20, "0x" + "0" * 40
    creator, holder = "0x" + "99" * 20, "0x" + "66" * 20
    rows = [("mint", zero, zero, 1000, 0, 0), ("mint", zero, creator, 10**18, 0, 0),
            ("sync", None, None, 0, 10**21, 10**18), ("transfer", creator, holder, 10**17, 0, 0),
            ("burn", holder, pool, 10**17, 0, 0), ("burn", pool, zero, 10**17, 0, 0),
            ("sync", None, None, 0, 9 * 10**20, 9 * 10**17)]
    return [pools.update(DexEvent(
        pool_address=pool, token0=token, token1=WETH, kind=kind, block_number=1 + i,
        block_timestamp=12 * (1 + i), transaction_hash="0x" + f"{i:064x}", log_index=i,
        sender=sender, to=to, liquidity=lp, reserve0=r0, reserve1=r1))
        for i, (kind, sender, to, lp, r0, r1) in enumerate(rows)]


def _exchange_trades(markets: TradeFeatures) -> list[dict[str, float]]:
    """Exchange trades, which DEX swaps never are: several fills of one market order in the
    same millisecond (rush orders), taker-less."""
    out = []
    for i, (ms, side) in enumerate([(0, "buy"), (0, "buy"), (5, "sell"), (9_000, "buy")]):
        out.append(markets.update(Trade(venue="x", market="A/BTC", side=side, price=1.0 + i,
                                        amount=2.0, quote_volume=2.0 + 2 * i,
                                        timestamp=1_600_000_000_000 + ms)))
    return out


@cache
def _dicts() -> Dicts:
    txs: list[dict[str, float]] = []
    dex: list[dict[str, float]] = []
    trades: list[dict[str, float]] = []
    for seed in SEEDS:
        addresses, pools, markets = AddressFeatures(), PoolFeatures(), TradeFeatures()
        chain = SyntheticChain(SynthConfig(seed=seed, blocks=BLOCKS, campaigns=CAMPAIGNS))
        for block in chain.blocks():
            txs += (addresses.update(tx) for tx in block.transactions)
            for ev in block.dex_events:
                st, x = pools.update_state(ev)
                dex.append(x)
                trade = trade_from_swap(ev, st.weth_is_0) if ev.kind == "swap" else None
                if trade is not None:
                    trades.append(markets.update(trade))
    txs += _hand_made(AddressFeatures())
    dex += _hand_made_dex(PoolFeatures())
    trades += _exchange_trades(TradeFeatures())
    return tuple(txs), tuple(dex), tuple(trades)


def _of(kind: str) -> tuple[dict[str, float], ...]:
    txs, dex, trades = _dicts()
    return {"transactions": txs, "dex": dex, "trades": trades}[kind]


def _union(dicts: Iterable[dict[str, float]]) -> set[str]:
    return set().union(*dicts)


@pytest.mark.parametrize("kind", KINDS)
def test_emitted_keys_are_exactly_the_catalogued_ones(kind: str) -> None:
    emitted, documented = _union(_of(kind)), set(names(kind))
    undocumented, never_emitted = sorted(emitted - documented), sorted(documented - emitted)
    assert not undocumented and not never_emitted, (
        f"{kind}: emitted but not in pipeline/features/catalog.py: {undocumented}; "
        f"catalogued but never emitted: {never_emitted}")


@pytest.mark.parametrize("kind", KINDS)
def test_presence_is_as_documented(kind: str) -> None:
    dicts = _of(kind)
    always = {f.name for f in features(kind) if f.always}
    missing = sorted({k for x in dicts for k in always - x.keys()})
    assert not missing, f"{kind}: documented as always present, but missing sometimes: {missing}"
    conditional = {f.name for f in features(kind) if not f.always}
    never_absent = sorted(k for k in conditional if all(k in x for x in dicts))
    assert not never_absent, f"{kind}: documented as conditional, never absent: {never_absent}"


def test_window_suffixes_match_the_code() -> None:
    """A name's window suffix is the window its meaning (and the code) uses."""
    suffix = {"sender_txs_10": WINDOW, "fan_out_10": WINDOW, "new_recipients_10": WINDOW,
              "value_out_10": WINDOW, "fan_in_10": WINDOW, "buys_5": SHORT, "sells_5": SHORT,
              "buy_weth_5": SHORT, "imbalance_5": SHORT, "unique_buyers_5": SHORT,
              "fresh_buyer_share_5": SHORT, "buyer_hhi_5": SHORT, "trades_20": LONG,
              "traders_20": LONG, "turnover_20": LONG, "net_flow_20": LONG,
              "round_trip_share_20": LONG, "two_sided_20": LONG, "volume_ratio_20": LONG,
              "lp_burns_20": LONG, "lp_removed_weth_20": LONG, "syncs_270": SYNC_WINDOW,
              "volatility_50": VOLATILITY_N}
    suffix |= {f"return_{w}": w for w in RETURN_WINDOWS}
    for name, window in suffix.items():
        assert name.endswith(f"_{window}"), (name, window)
    catalogued = {f.name for kind in KINDS for f in features(kind)}
    assert set(suffix) <= catalogued


def test_catalog_shape_and_markdown() -> None:
    assert tuple(CATALOG) == KINDS
    for kind in KINDS:
        entries = features(kind)
        assert all(isinstance(f, Feature) for f in entries)
        assert len(set(names(kind))) == len(entries), f"{kind}: duplicate names"
        for f in entries:
            assert f.meaning.endswith(".") and f.unit and f.meaning[0] != " ", f
        table = markdown(kind).splitlines()
        assert table[:2] == ["| feature | meaning |", "| --- | --- |"]
        assert [row.split("`")[1] for row in table[2:]] == list(names(kind))
        assert all(row.count(" | ") == 1 for row in table[2:]), "a cell has an unescaped |"
    with pytest.raises(TypeError):
        CATALOG["x"] = ()  # type: ignore[index]
    with pytest.raises(ValueError, match="unknown record kind"):
        names("blocks")
