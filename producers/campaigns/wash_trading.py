"""Wash trading: a cluster of wallets trades one pool in circles, volume without a position."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from producers.campaigns.base import TOKEN_TRANSFER_GAS, Campaign

if TYPE_CHECKING:
    from producers.amm import Pool
    from producers.world import World

ERC20_TRANSFER = "0xa9059cbb"  # transfer(address,uint256)
PASS_ON_SHARE = 0.6
"""Share of rounds where the buyer hands the tokens to the next wallet, which sells them."""


def erc20_transfer_input(to: str, amount: int) -> str:
    """Calldata of ``transfer(to, amount)``.

    >>> erc20_transfer_input("0x" + "ab" * 20, 255)[-8:]
    '000000ff'
    """
    return ERC20_TRANSFER + to.removeprefix("0x").rjust(64, "0") + f"{amount:064x}"


class WashTrading(Campaign):
    """Three to eight wallets pass a token around a ring: buy, hand on, sell, buy back.

    Each round one wallet buys; either it sells the tokens back itself or it transfers them to
    the next wallet of the ring, which sells them, and that wallet buys next. Every token
    bought is sold again before the campaign ends, so the cluster's net position is zero.
    Phases: ``start`` → ``end`` (the last block it trades). ``difficulty`` lowers the rounds
    per block and the trade size relative to the pool's normal trading, and lets a sale lag
    its buy by more blocks.
    """

    type = "wash_trading"

    def __init__(self, campaign_id: str, start_block: int, world: World, pool: Pool,
                 difficulty: float) -> None:
        super().__init__(campaign_id, start_block)
        rng, cfg = world.rng, world.config
        loud = 1.0 - difficulty
        self.pool = pool
        size = rng.randint(3, 8)
        cluster: list[str] = []
        if rng.random() < 0.5:  # known wallets, not fresh ones
            known = [w for w in world.wallets if w not in world.contracts]
            cluster = rng.sample(known, min(size, len(known)))
        self.cluster = cluster + [world.fresh_wallet(campaign_id + "/wash")
                                  for _ in range(size - len(cluster))]
        self.blocks = rng.randint(30, 60)
        normal_swaps = cfg.txs_per_block * cfg.swap_share / max(len(world.pools), 1)
        self.rounds_per_block = normal_swaps * (0.75 + 1.75 * loud)  # two swaps a round
        self.trade_share = 0.003 * (1 + 2 * loud)  # of the WETH reserve, per buy
        self.max_lag = round(3 * difficulty)
        self._turn = 0
        self._pending: list[tuple[int, str, int]] = []  # (sell by block, seller, tokens)

    @property
    def duration(self) -> int:
        return self.blocks

    @property
    def subject(self) -> str:
        return self.pool.address

    def act(self, world: World) -> None:
        number, rng = world.block.number, world.rng
        if not self.active(number):
            return
        whole = int(self.rounds_per_block)
        rounds = whole + (rng.random() < self.rounds_per_block - whole)
        for _ in range(rounds):
            self._round(world, number)
        last = number == self.end_block - 1
        due = [p for p in self._pending if last or p[0] <= number]
        self._pending = [p for p in self._pending if not (last or p[0] <= number)]
        for _, seller, tokens in due:
            world.swap(seller, self.pool, False, tokens)

    def _round(self, world: World, number: int) -> None:
        rng, pool = world.rng, self.pool
        buyer = self.cluster[self._turn % len(self.cluster)]
        self._turn += 1  # the next wallet of the ring buys next round
        spend = int(pool.reserve1 * self.trade_share * rng.uniform(0.7, 1.3))
        tokens = world.swap(buyer, pool, True, spend)
        seller = buyer
        if rng.random() < PASS_ON_SHARE:
            seller = self.cluster[self._turn % len(self.cluster)]
            world.transaction(buyer, pool.token0, 0, TOKEN_TRANSFER_GAS,
                              erc20_transfer_input(seller, tokens))
        self._pending.append((number + rng.randint(0, self.max_lag), seller, tokens))

    def truth(self) -> dict[str, Any]:
        return self._truth(self.cluster, {"start": self.start_block, "end": self.end_block - 1},
                           cluster=sorted(self.cluster))
