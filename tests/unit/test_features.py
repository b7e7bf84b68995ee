"""Feature stores: running aggregates equal a brute-force recount, memory stays bounded and
evictions are counted, rows without reserves never move a pool's price or liquidity."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.features import (
    WETH,
    AddressFeatures,
    BaseFee,
    BlockRing,
    KeyedStore,
    PoolFeatures,
    Seen,
    TradeWindow,
)
from pipeline.records import MAX_BLOCK_NUMBER, DexEvent, Transaction
from pipeline.state import decode, encode

TRADES = st.lists(st.tuples(st.integers(0, 3), st.sampled_from("abcde"), st.booleans(),
                            st.integers(1, 10**20), st.booleans()), min_size=1, max_size=60)


@given(TRADES, st.integers(1, 6))
@settings(max_examples=150, deadline=None)
def test_trade_window_matches_a_recount(steps: list[tuple[int, str, bool, int, bool]],
                                        blocks: int) -> None:
    window, block, log = TradeWindow(blocks), 0, []
    for i, (gap, trader, buy, weth, fresh) in enumerate(steps):
        block += gap
        window.add(block, trader, buy, weth, fresh=fresh, item_id=f"id{i}")
        log.append((block, trader, buy, weth, fresh))
        live = [t for t in log if t[0] > block - blocks]
        bought, sold = Counter[str](), Counter[str]()
        first_buy: dict[str, bool] = {}
        for _, who, is_buy, amount, is_fresh in live:
            (bought if is_buy else sold)[who] += amount
            if is_buy:
                first_buy.setdefault(who, is_fresh)
        assert window.buys == sum(1 for t in live if t[2])
        assert window.sell_weth == sum(sold.values())
        assert window.buyers == len(bought)
        assert window.buyer_sq == sum(v * v for v in bought.values())
        assert window.round_trip == sum(min(bought[w], sold[w]) for w in bought)
        assert window.two_sided == sum(1 for w in bought if sold[w])
        assert set(window.traders) == {t[1] for t in live}
        assert window.item_ids() == [f"id{i}" for i, t in enumerate(log) if t in live][-64:]
        assert 0 <= window.fresh_buyers <= window.buyers


def test_block_ring_carries_values_over_quiet_blocks() -> None:
    ring = BlockRing(4)
    ring.set(10, 1.0)
    ring.set(13, 4.0)
    assert [ring.at(b) for b in (9, 10, 11, 12, 13, 14)] == [None, 1.0, 1.0, 1.0, 4.0, None]
    ring.set(30, 2.0)  # a long gap: everything older than the ring is the carried close
    assert [ring.at(b) for b in (26, 27, 29, 30)] == [None, 4.0, 4.0, 2.0]
    assert ring.max_since(27) == 4.0
    ring.set(29, 9.0)  # older than the newest block: ignored
    assert ring.at(29) == 4.0


def test_keyed_store_is_bounded_and_counts_evictions() -> None:
    store = KeyedStore(Seen, max_keys=100, idle_blocks=10)
    for i in range(1000):
        store.get(f"k{i}", i // 50)
        assert len(store) <= 100
    assert store.evictions == 1000 - len(store)
    assert all(store.peek(k) is not None for k in store)
    restored = KeyedStore(Seen, max_keys=100, idle_blocks=10)
    restored.load_state(decode(encode(store.state())))
    assert restored.evictions == store.evictions and list(restored) == list(store)


def _swap(block: int, r0: int, r1: int, to: str, *, weth_in: int = 0, weth_out: int = 0,
          kind: str = "swap", log: int = 0) -> DexEvent:
    return DexEvent(pool_address="0x" + "11" * 20, token0="0x" + "22" * 20, token1=WETH,
                    kind=kind, block_number=block, block_timestamp=block * 12,
                    transaction_hash="0x" + f"{block:064x}", log_index=log, reserve0=r0,
                    reserve1=r1, amount1_in=weth_in, amount1_out=weth_out,
                    amount0_out=1 if weth_in else 0, amount0_in=1 if weth_out else 0, to=to)


def test_pool_features_price_liquidity_and_rows_without_reserves() -> None:
    pools = PoolFeatures()
    x = pools.update(_swap(1, 10**24, 10**20, "0x" + "aa" * 20, weth_in=10**18))
    assert x["price"] == 10**20 / 10**24 and x["liquidity_weth"] == 100.0
    assert "launch_age" not in x  # first seen on a swap: an established pool
    for kind in ("mint", "burn", "transfer", "sync"):
        y = pools.update(_swap(2, 0, 0, "0x" + "bb" * 20, kind=kind))
        assert (y["price"], y["liquidity_weth"]) == (x["price"], x["liquidity_weth"])
    y = pools.update(_swap(3, 10**24, 10**19, "0x" + "cc" * 20, weth_out=9 * 10**19))
    assert abs(y["liquidity_drop_3"] - 0.9) < 1e-12 and y["liquidity_peak_3"] == 100.0
    assert abs(y["return_1"] + 0.9) < 1e-12 and y["drawdown"] > 0.89
    assert y["sells_5"] == 1.0 and y["buys_5"] == 1.0


def test_pool_store_evicts_idle_pools() -> None:
    pools = PoolFeatures(max_pools=3, idle_blocks=50)
    for i in range(10):
        ev = _swap(i * 100, 10**24, 10**20, "0x" + "aa" * 20, weth_in=1)
        pools.update(DexEvent(**{**ev.to_dict(), "pool_address": f"0x{i:040x}"}))
    assert len(pools.pools) == 1 and pools.evictions >= 9


def _tx(block: int, sender: str, to: str | None, eth: float, *, i: int = 0,
        tip: int | None = 10**9) -> Transaction:
    return Transaction(hash="0x" + f"{block:031x}{i:033x}", nonce=0, block_number=block,
                       block_timestamp=block * 12, transaction_index=i, from_address=sender,
                       to_address=to, value=int(eth * 10**18), gas=21000,
                       gas_price=21 * 10**9, max_priority_fee_per_gas=tip)


def test_address_features_fan_out_to_fresh_wallets() -> None:
    feats = AddressFeatures()
    hub = "0x" + "ab" * 20
    feats.update(_tx(1, "0x" + "01" * 20, hub, 50.0))
    xs = [feats.update(_tx(3, hub, f"0x{i + 100:040x}", 1.0, i=i)) for i in range(20)]
    last = xs[-1]
    assert last["fan_out_10"] == last["new_recipients_10"] == last["novel_fan_out"] == 20.0
    assert last["sender_txs_10"] == 20.0 and xs[0]["first_send"] == 1.0
    assert xs[0]["share_of_received"] == 1.0 / 50.0
    assert abs(last["gas_premium"] - 0.0212) < 1e-3  # 21 gwei against a 20 gwei base fee
    later = feats.update(_tx(30, hub, f"0x{5:040x}", 1.0))  # the window has moved on
    assert later["fan_out_10"] == 1.0 and later["sender_idle"] > 1.0


def test_base_fee_from_gas_prices_alone() -> None:
    fee = BaseFee()
    for block in range(5):
        for gwei in (30, 31, 45, 60, 33, 32, 80, 34, 35, 36):
            fee.observe(block, gwei * 10**9, None)
    assert 30e9 <= fee.estimate <= 31e9  # a low quantile of each block's prices
    assert fee.premium(60 * 10**9) > 0.25


def test_address_store_is_bounded() -> None:
    feats = AddressFeatures(max_addresses=50, idle_blocks=1000)
    for i in range(500):
        feats.update(_tx(i, f"0x{i:040x}", f"0x{i + 10**6:040x}", 1.0))
    assert len(feats.addresses) <= 50 and feats.evictions == 1000 - len(feats.addresses)


def test_a_drained_pool_does_not_remember_its_pre_drain_reserve() -> None:
    """Quiet blocks carry a block's closing reserve, not its intra-block maximum."""
    pools = PoolFeatures()
    pools.update(_swap(1, 10**24, 10**20, "0x" + "aa" * 20, weth_in=10**18))
    pools.update(_swap(5, 10**24, 10**20, "0x" + "aa" * 20, weth_in=10**18, log=1))
    drained = pools.update(_swap(5, 10**21, 10**17, "0x" + "bb" * 20, weth_out=10**20, log=2))
    assert drained["liquidity_drop_3"] > 0.99
    later = pools.update(_swap(40, 10**21, 10**17 - 10**15, "0x" + "cc" * 20, weth_out=10**15))
    assert later["liquidity_peak_3"] == 0.1 and later["liquidity_drop_3"] < 0.02


# blocks in any order: mostly near each other, some far ahead, some back to the start
ANY_ORDER = st.lists(st.one_of(st.integers(0, 40), st.integers(0, MAX_BLOCK_NUMBER)),
                     min_size=2, max_size=40)


def _finite(x: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in x.values())


@given(ANY_ORDER, st.lists(st.integers(0, 3), min_size=40, max_size=40))
@settings(max_examples=200, deadline=None)
@example([300, 1], [0, 0] + [0] * 38)  # the same sender, its chain produced again from block 1
@example([MAX_BLOCK_NUMBER, 5, 6], [0, 0, 1] + [0] * 37)
def test_address_features_take_blocks_in_any_order(blocks: list[int],
                                                   who: list[int]) -> None:
    """Out-of-order blocks (a chain produced twice into one broker) never raise: ages and
    idle times clamp at 0 and an address's first block is the smallest seen."""
    feats = AddressFeatures()
    wallets = [f"0x{i + 1:040x}" for i in range(4)]
    for i, block in enumerate(blocks):
        sender, to = wallets[who[i]], wallets[(who[i] + 1) % 4]
        x = feats.update(_tx(block, sender, to, 1.0 + i, i=i))
        assert _finite(x)
        assert x["sender_age"] >= 0.0 and x["sender_idle"] >= 0.0
        state = feats.addresses.peek(sender)
        assert state is not None and state.first_block <= block <= state.last_block


def test_an_address_seen_again_at_an_earlier_block_is_not_older_than_zero() -> None:
    feats = AddressFeatures()
    a, b = "0x" + "aa" * 20, "0x" + "bb" * 20
    feats.update(_tx(300, a, b, 1.0))
    x = feats.update(_tx(1, a, b, 1.0, i=1))  # the same chain, produced again
    assert (x["sender_age"], x["sender_idle"], x["sender_new"]) == (0.0, 0.0, 0.0)
    later = feats.update(_tx(11, a, b, 1.0, i=2))
    assert later["sender_age"] == math.log10(11.0)  # first seen at block 1 after all


@given(ANY_ORDER)
@settings(max_examples=200, deadline=None)
@example([0, 300, 10**6, 300])  # back by more than exp() can take in the volume decay
def test_pool_features_take_blocks_in_any_order(blocks: list[int]) -> None:
    pools = PoolFeatures()
    for i, block in enumerate(blocks):
        weth = 10**18 * (i + 1)
        x = pools.update(_swap(block, 10**24 - i, 10**20 + i, f"0x{i % 5 + 1:040x}",
                               weth_in=weth if i % 2 else 0, weth_out=0 if i % 2 else weth,
                               log=i))
        assert _finite(x)
        assert x["age"] >= 0.0 and x.get("launch_age", 0.0) >= 0.0


def test_reserve_flow_and_a_pool_without_a_weth_side() -> None:
    from pipeline.features.pools import WETH, PoolFeatures

    def sync(pool: str, token1: str, block: int, r0: int, r1: int) -> DexEvent:
        return DexEvent(pool_address=pool, token0="0x" + "22" * 20, token1=token1,
                        kind="sync", block_number=block, block_timestamp=block * 13,
                        transaction_hash=f"0x{block:064x}", log_index=0,
                        reserve0=r0, reserve1=r1)

    pools, weth_pool, other = PoolFeatures(), "0x" + "11" * 20, "0x" + "33" * 20
    x: dict[str, float] = {}
    # token reserve, WETH reserve: open, buy, sell (20 % of the WETH out), both up (a mint)
    for block, (token, weth) in enumerate([(1000, 100), (900, 120), (1100, 96), (2200, 192)],
                                          start=10):
        x = pools.update(sync(weth_pool, WETH, block * 10, token * 10**18, weth * 10**18))
    assert (x["syncs_total"], x["first_liquidity_weth"], x["sell_share"]) == (4.0, 100.0, 0.5)
    assert x["max_sell_share"] == pytest.approx(0.2) and x["sync_gap"] == 10.0
    y = pools.update(sync(other, "0x" + "44" * 20, 5, 10**21, 10**20))
    assert y["liquidity_weth"] == 0.0 and y["price"] == 0.0 and "syncs_total" not in y
