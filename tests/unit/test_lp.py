"""The LP ledger and the pool trajectory features on hand-built Uniswap-V2-style rows.

Rows are shaped as :class:`producers.formats.UniswapV2` maps the uniswap-v2-2021 dataset: an
LP-token Transfer from the zero address is a ``mint`` (``liquidity`` = LP amount, ``to`` =
recipient), to the pool or the zero address a ``burn`` (``sender`` = from), between holders a
``transfer``; ``Sync`` rows are ``sync`` with the reserves.
"""

from __future__ import annotations

import math

import pytest

from pipeline.detectors.rug import LiquidityDrain
from pipeline.features import PoolFeatures
from pipeline.features.lp import DEAD, LOCKED_HOLDERS, MAX_HOLDERS, LpLedger
from pipeline.features.pools import WETH
from pipeline.records import ZERO_ADDRESS, DexEvent
from pipeline.state import StateError, decode, encode

POOL, TOKEN = "0x" + "11" * 20, "0x" + "22" * 20
POOL2 = "0x" + "12" * 20
CREATOR, HOLDER = "0x" + "cc" * 20, "0x" + "bb" * 20
UNCX = "0x663a5c229c09b049e36dcc11a9b0d4a8eb9db214"
LP_KEYS = ("lp_holders", "lp_creator_share", "lp_top_share", "lp_locked_share",
           "lp_creator_removed")


class Rows:
    """Feeds rows of one pool to a PoolFeatures, each in its own log index."""

    def __init__(self, pools: PoolFeatures | None = None, pool: str = POOL) -> None:
        self.pools = pools or PoolFeatures()
        self.pool = pool
        self.log = 0

    def __call__(self, block: int, kind: str, sender: str | None = None, to: str | None = None,
                 *, lp: int = 0, weth: int = 0, token: int = 0,
                 launch: bool = False) -> dict[str, float]:
        self.log += 1
        return self.pools.update(DexEvent(
            pool_address=self.pool, token0=TOKEN, token1=WETH, kind=kind, block_number=block,
            block_timestamp=block * 12, transaction_hash="0x" + f"{self.log:064x}",
            log_index=self.log, sender=sender, to=to, liquidity=lp, reserve0=token,
            reserve1=weth, amount0_in=token if launch else 0, amount1_in=weth if launch else 0))

    def mint(self, block: int, to: str, lp: int) -> dict[str, float]:
        return self(block, "mint", ZERO_ADDRESS, to, lp=lp)

    def move(self, block: int, sender: str, to: str, lp: int) -> dict[str, float]:
        kind = "burn" if to in (ZERO_ADDRESS, POOL) else "transfer"
        return self(block, kind, sender, to, lp=lp)

    def sync(self, block: int, weth: int, token: int) -> dict[str, float]:
        return self(block, "sync", weth=weth, token=token)


def _ledger(rows: Rows) -> LpLedger:
    pool = rows.pools.pools.peek(POOL)
    assert pool is not None and pool.ledger is not None
    return pool.ledger


def _launched() -> Rows:
    """A Uniswap launch as the dataset shows it: the 1000 units of minimum liquidity minted
    to the zero address, then the creator's LP, then the Sync."""
    rows = Rows()
    lock = rows.mint(1, ZERO_ADDRESS, 1000)
    assert not set(LP_KEYS) & lock.keys()  # no creator yet
    assert lock["lp_mints"] == 0.0 and lock["blocks_since_mint"] == 0.0
    rows.mint(1, CREATOR, 9000)
    rows.sync(1, 10**20, 10**24)
    return rows


def test_the_first_mint_makes_the_creator_and_its_lock_is_not_locked_share() -> None:
    x = _launched().sync(2, 10**20, 10**24)
    assert (x["lp_holders"], x["lp_creator_share"], x["lp_top_share"]) == (1.0, 1.0, 1.0)
    assert (x["lp_locked_share"], x["lp_creator_removed"]) == (0.0, 0.0)
    assert (x["lp_mints"], x["lp_burns"], x["blocks_since_mint"]) == (1.0, 0.0, 1.0)


def test_a_second_holder_a_dead_address_lock_and_a_two_row_burn() -> None:
    rows = _launched()
    x = rows.mint(2, HOLDER, 3000)  # a second provider: 12000 circulate
    assert (x["lp_holders"], x["lp_creator_share"], x["lp_top_share"]) == (2.0, 0.75, 0.75)
    assert x["lp_mints"] == 2.0
    x = rows.move(3, CREATOR, DEAD, 6000)  # the creator burns half its LP to 0x…dead: locked
    assert (x["lp_holders"], x["lp_locked_share"]) == (2.0, 0.5)
    assert (x["lp_creator_share"], x["lp_top_share"]) == (0.25, 0.25)
    assert x["lp_creator_removed"] == pytest.approx(6000 / 9000)
    # a Uniswap burn: holder -> pool (in flight, out of circulation), pool -> zero address
    x = rows.move(4, HOLDER, POOL, 3000)
    assert x["lp_burns"] == 0.0 and x["lp_holders"] == 1.0
    assert x["lp_locked_share"] == pytest.approx(6000 / 9000)
    x = rows.move(4, POOL, ZERO_ADDRESS, 3000)
    assert x["lp_burns"] == 1.0  # the two rows count once
    assert x["lp_locked_share"] == pytest.approx(6000 / 9000)
    assert x["lp_creator_share"] == x["lp_top_share"] == pytest.approx(3000 / 9000)
    # the creator's LP sent to a locker and straight to the zero address: both locked
    x = rows.move(5, CREATOR, UNCX, 1000)
    x = rows.move(6, CREATOR, ZERO_ADDRESS, 2000)  # a holder's LP to zero: a lock, no burn
    assert x["lp_burns"] == 1.0 and x["lp_holders"] == 0.0
    assert (x["lp_locked_share"], x["lp_creator_share"], x["lp_creator_removed"]) == (
        1.0, 0.0, 1.0)


def test_lp_minted_to_the_zero_address_beyond_the_first_lock_is_locked() -> None:
    """Auto-liquidity tokens mint their LP to the zero address (the dataset has such rows)."""
    rows = _launched()
    x = rows.mint(2, ZERO_ADDRESS, 9000)
    assert x["lp_mints"] == 2.0 and x["lp_locked_share"] == 0.5
    assert x["lp_creator_share"] == 0.5 and x["lp_creator_removed"] == 0.0


def test_the_creator_selling_lp_to_holders_shows_as_removed() -> None:
    rows = _launched()
    rows.move(2, CREATOR, HOLDER, 6000)
    x = rows.sync(3, 10**20, 10**24)
    assert x["lp_top_share"] == pytest.approx(6000 / 9000)
    assert x["lp_creator_share"] == pytest.approx(3000 / 9000)
    assert x["lp_creator_removed"] == pytest.approx(6000 / 9000)


def test_at_most_64_balances_a_new_holder_replaces_the_smallest() -> None:
    rows = _launched()
    holders = [f"0x{i + 1:040x}" for i in range(MAX_HOLDERS + 1)]
    for i, h in enumerate(holders[:MAX_HOLDERS]):
        x = rows.mint(2, h, 100 + i)  # the first holder is the smallest
    assert x["lp_holders"] == MAX_HOLDERS + 1.0  # and the creator
    x = rows.mint(3, holders[-1], 5)  # not larger than the smallest: untracked
    assert x["lp_holders"] == MAX_HOLDERS + 1.0
    x = rows.mint(3, holders[-1], 10**6)  # larger: the smallest (holders[0]) leaves
    ledger = _ledger(rows)
    assert len(ledger.balances) == MAX_HOLDERS and holders[0] not in ledger.balances
    assert ledger.balances[holders[-1]] == 10**6
    assert x["lp_holders"] == MAX_HOLDERS + 1.0
    assert x["lp_top_share"] == pytest.approx(10**6 / ledger.circulating)
    supply = 9000 + sum(100 + i for i in range(MAX_HOLDERS)) + 5 + 10**6
    assert ledger.circulating == supply  # the denominator stays exact
    rows.move(4, holders[0], HOLDER, 10**5)  # a forgotten holder's debit changes nothing
    assert ledger.balances[HOLDER] == 10**5 and holders[1] not in ledger.balances
    assert len(ledger.balances) == MAX_HOLDERS and ledger.circulating == supply


def test_the_synthetic_chains_burn_event_debits_its_recipient() -> None:
    """The synthetic chain writes Burn events: ``sender`` the router, ``to`` the provider."""
    rows = Rows()
    router = "0x" + "7a" * 20
    rows(1, "mint", router, CREATOR, lp=10**18, weth=10**20, token=10**24, launch=True)
    x = rows(5, "burn", router, CREATOR, lp=10**18 // 4, weth=3 * 10**19 // 4, token=3 * 10**23)
    assert x["lp_burns"] == 1.0 and x["lp_creator_removed"] == 0.25
    assert x["lp_creator_share"] == 1.0


def test_no_ledger_for_a_pool_first_seen_after_its_launch() -> None:
    rows = Rows()
    x = rows.sync(1, 10**20, 10**24)
    x = rows.mint(2, HOLDER, 500)
    assert not set(LP_KEYS) & x.keys()
    assert x["lp_mints"] == 1.0 and x["blocks_since_mint"] == 0.0


def test_price_drop_peak_sees_a_slow_dump() -> None:
    """The price falls 90 % in equal steps over 40 blocks: no 10-block window sees much of it,
    price_drop_peak sees all of it."""
    rows = _launched()
    weth = 10**20
    for b in range(2, 12):
        x = rows.sync(b, weth, 10**24)  # flat for 10 blocks: the peak is the latest
    assert x["price_drop_peak"] == 0.0 and x["price_peak_age"] == 0.0
    peak_block = 11
    for step in range(1, 41):
        price = 1.0 - 0.9 * step / 40  # of the peak price
        x = rows.sync(peak_block + step, round(weth * math.sqrt(price)),
                      round(10**24 / math.sqrt(price)))
    assert x["price_drop_peak"] == pytest.approx(0.9, abs=1e-9)
    assert x["price_peak_age"] == 40.0
    assert x["price_vs_first"] == pytest.approx(0.1, abs=1e-9)
    assert x["liquidity_growth"] == pytest.approx(math.sqrt(0.1), abs=1e-9)
    assert x["liquidity_peak_weth"] == 100.0
    assert x["price_drop_10"] < 0.8  # the 10-block view misses most of it
    assert x["syncs_270"] == 51.0  # every Sync since block 1 (the launch's included)
    assert x["volatility_50"] > 0
    later = rows.sync(400, round(weth * math.sqrt(0.1)), round(10**24 / math.sqrt(0.1)))
    assert later["syncs_270"] == 1.0 and later["price_peak_age"] == 389.0


def _at(rows: Rows, block: int, price: float) -> dict[str, float]:
    """A Sync at ``price`` (of 1 ether per 10,000 tokens), with 100 ether at price 1."""
    return rows.sync(block, round(10**20 * math.sqrt(price)), round(10**24 / math.sqrt(price)))


def test_a_price_swinging_about_a_crash_level_crosses_it_once_per_peak() -> None:
    """price_drop_peak_before holds the deepest fall since the peak, so the rug detector's
    slow-dump path (price_drop_peak ≥ 0.9 while price_drop_peak_before < 0.9) fires at the
    first crossing only, not at every swing back over the level; a new peak starts afresh."""
    rows = _launched()
    detector = LiquidityDrain()
    fired = []
    path = [1.0, 0.5, 0.2, 0.095, 0.12, 0.08, 0.11, 0.09, 0.105, 0.07,  # crosses at 0.095
            1.2, 0.6, 0.1, 0.11]  # a new peak (1.2): crosses again at 0.1 (1 - 0.1/1.2)
    for block, price in enumerate(path, start=2):
        x = _at(rows, block, price)
        if detector.score_one(x) >= detector.crash_drop:
            fired.append(price)
        if price == 0.11 and block > 10:
            assert x["price_drop_peak_before"] == pytest.approx(1 - 0.1 / 1.2, abs=1e-9)
    assert fired == [0.095, 0.1]
    assert _at(rows, 40, 1.3)["price_drop_peak_before"] == 0.0  # a new peak
    assert _at(rows, 41, 1.0)["price_drop_peak_before"] == 0.0  # nothing below it before
    assert _at(rows, 42, 0.5)["price_drop_peak_before"] == pytest.approx(1 - 1.0 / 1.3,
                                                                         abs=1e-9)


def test_a_creator_whose_pool_was_rugged_marks_its_other_pools() -> None:
    """creator_pools / creator_rugged: the creator's other pools on this scorer, and those of
    them 90 % below their peak WETH reserve; a pool never counts itself, and a state round
    trip keeps the record."""
    pools = PoolFeatures()
    first, second = Rows(pools), Rows(pools, POOL2)
    x = first.mint(1, ZERO_ADDRESS, 1000)
    assert "creator_pools" not in x  # no creator yet
    first.mint(1, CREATOR, 9000)
    x = first.sync(1, 10**20, 10**24)
    assert x["creator_pools"] == 0.0 and x["creator_rugged"] == 0.0
    x = first.sync(5, 9 * 10**18, 10**24)  # 91 % of the WETH gone
    assert x["creator_rugged"] == 0.0  # not its own
    second.mint(7, ZERO_ADDRESS, 1000)
    second.mint(7, CREATOR, 9000)
    x = second.sync(7, 10**20, 10**24)
    assert x["creator_pools"] == 1.0 and x["creator_rugged"] == 1.0
    x = first.sync(8, 8 * 10**18, 10**24)  # the first pool sees the second, unrugged
    assert x["creator_pools"] == 1.0 and x["creator_rugged"] == 0.0
    restored = PoolFeatures()
    restored.load_state(decode(encode(pools.state())))
    again = Rows(restored, POOL2).sync(9, 10**20, 10**24)
    assert again["creator_pools"] == 1.0 and again["creator_rugged"] == 1.0


def test_volatility_50_over_the_last_50_changes() -> None:
    rows = Rows()
    prices = [1.0 + 0.1 * ((i * 7) % 5) for i in range(120)]
    for i, p in enumerate(prices):
        x = rows.sync(i + 1, round(10**20 * p), 10**20)
    changes = [math.log((round(10**20 * b)) / round(10**20 * a))
               for a, b in zip(prices[-51:-1], prices[-50:], strict=True)]
    mean = sum(changes) / 50
    expected = math.sqrt(sum((c - mean) ** 2 for c in changes) / 49)
    assert x["volatility_50"] == pytest.approx(expected, rel=1e-9)
    assert "volatility_50" not in Rows().sync(1, 10**20, 10**20)


def test_a_pool_with_lp_holders_survives_a_state_round_trip() -> None:
    rows = _launched()
    rows.mint(2, HOLDER, 3000)
    rows.move(3, CREATOR, DEAD, 2000)
    for b in range(4, 70):
        rows.sync(b, 10**20 + b * 10**17, 10**24 - b * 10**20)
    restored = PoolFeatures()
    restored.load_state(decode(encode(rows.pools.state())))
    again = Rows(restored)
    again.log = rows.log
    for feed in (lambda r: r.sync(71, 10**20, 10**24), lambda r: r.move(72, HOLDER, POOL, 1000),
                 lambda r: r.move(72, POOL, ZERO_ADDRESS, 1000)):
        expected, got = feed(rows), feed(again)
        assert got == expected
        assert set(LP_KEYS) <= got.keys() and "volatility_50" in got
    assert got["lp_burns"] == 1.0 and got["lp_mints"] == 2.0
    assert _ledger(rows).creator == CREATOR


def test_ledger_state_is_checked() -> None:
    ledger = LpLedger()
    ledger.apply("mint", ZERO_ADDRESS, CREATOR, 10, POOL)
    ledger.apply("transfer", CREATOR, UNCX, 4, POOL)
    state = ledger.state()
    copy = LpLedger()
    copy.load_state(decode(encode(state)))
    assert copy.features() == ledger.features() and copy.locked == {UNCX: 4}
    with pytest.raises(StateError):
        LpLedger().load_state(state | {"locked": [["0x" + "ee" * 20, 1]]})
    with pytest.raises(StateError):
        LpLedger().load_state(state | {"v": 2})
    assert UNCX in LOCKED_HOLDERS and DEAD in LOCKED_HOLDERS


@pytest.mark.parametrize("older", [1, 2])
def test_a_pool_state_of_an_older_layout_is_refused(older: int) -> None:
    rows = _launched()
    state = rows.pools.state()
    key, pool_state = state["pools"]["items"][0]
    assert pool_state["v"] == 3
    with pytest.raises(StateError, match=f"layout version {older}"):
        PoolFeatures().load_state(
            state | {"pools": state["pools"] | {"items": [[key, pool_state | {"v": older}]]}})
    with pytest.raises(StateError, match="layout version 1"):  # before the creator records
        PoolFeatures().load_state({"v": 1, "pools": state["pools"],
                                   "wallets": state["wallets"]})


def test_syncs_270_counts_10_block_buckets_and_blocks_out_of_order() -> None:
    rows = Rows()
    for block in (5, 9, 100, 265):
        x = rows.sync(block, 10**20, 10**24)
    assert x["syncs_270"] == 4.0  # blocks 0 … 265: all 27 buckets
    assert rows.sync(270, 10**20, 10**24)["syncs_270"] == 3.0  # bucket 0-9 left: 10 … 270
    assert rows.sync(50, 10**20, 10**24)["syncs_270"] == 1.0  # back in time: 10 … 50, itself
    assert rows.sync(3, 10**20, 10**24)["syncs_270"] == 0.0  # older than the ring: not kept
    assert rows.sync(271, 10**20, 10**24)["syncs_270"] == 5.0  # 50, 100, 265, 270, 271
    assert rows(5000, "transfer", HOLDER, CREATOR, lp=1)["syncs_270"] == 0.0
