"""Rug pull: a creator launches a token, shills buy it up, the creator takes the WETH."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from producers.amm import MINIMUM_LIQUIDITY
from producers.campaigns.base import ETHER, Campaign
from producers.world import derive_address

if TYPE_CHECKING:
    from producers.amm import Pool
    from producers.world import World

DEPLOY_GAS = 1_800_000
MINT_AND_SELL_SHARE = 0.3
"""Share of rug pulls drained by dumping a pre-minted hoard instead of burning the LP."""


class RugPull(Campaign):
    """A fresh token and pool, a burst of buyers, then the creator empties the pool.

    Phases: ``launch`` (start: the creator deploys the token and seeds a new pool) → ``hype``
    (fresh wallets buy in, lifting the price) → ``drain`` (one block: the creator burns all its
    LP tokens, or sells a pre-minted token hoard into the pool) → end. The ``pool`` it is
    given is ignored. ``difficulty`` shrinks the launch liquidity (so the WETH taken), the
    number of buyers and the price lift, and spreads the hype over more blocks.
    """

    type = "rug_pull"

    def __init__(self, campaign_id: str, start_block: int, world: World, pool: Pool,
                 difficulty: float) -> None:
        super().__init__(campaign_id, start_block)
        rng, seed = world.rng, world.config.seed
        loud = 1.0 - difficulty
        self.token = derive_address(seed, "rug-token", campaign_id)
        self.pool_address = derive_address(seed, "rug-pool", campaign_id)
        self.creator = world.fresh_wallet(campaign_id + "/creator")
        self.buyers = [world.fresh_wallet(campaign_id + "/buyer") for _ in
                       range(rng.randint(8, 15) + int(30 * loud))]
        reserves = sorted(p.reserve1 for p in world.pools) or [300 * ETHER]
        typical = reserves[len(reserves) // 2]
        self.launch_weth = int(typical * (0.02 + 0.3 * loud) * rng.lognormvariate(0, 0.3))
        self.launch_tokens = int(self.launch_weth / rng.lognormvariate(math.log(1e-6), 1.5))
        self.method = ("mint_and_sell" if rng.random() < MINT_AND_SELL_SHARE
                       else "remove_liquidity")
        # a hoard of at least 6x the pool's tokens takes >= 85 % of its WETH in one sale
        self.hoard = int(self.launch_tokens * (6 + 94 * loud) * rng.uniform(1.0, 1.5))
        self.launch_blocks = rng.randint(2, 5)
        self.hype_blocks = rng.randint(10, 20) + int(20 * difficulty)
        self.price_multiple = 1.5 + 3.5 * loud  # price at the hype's top vs the launch
        weights = [rng.lognormvariate(0, 0.8) for _ in self.buyers]
        total = sum(weights)
        self._buys = [(rng.randrange(self.hype_blocks), w / total) for w in weights]
        self.pool: Pool | None = None
        self._lp = 0
        self._hype_budget = 0

    @property
    def hype_block(self) -> int:
        return self.start_block + self.launch_blocks

    @property
    def drain_block(self) -> int:
        return self.hype_block + self.hype_blocks

    @property
    def duration(self) -> int:
        return self.launch_blocks + self.hype_blocks + 1

    @property
    def subject(self) -> str:
        return self.pool_address

    def act(self, world: World) -> None:
        number = world.block.number
        if number == self.start_block:
            world.transaction(self.creator, None, 0, DEPLOY_GAS, "0x60806040")  # the token
            self.pool = world.launch_pool(self.creator, self.pool_address, self.token,
                                          self.launch_tokens, self.launch_weth)
            self._lp = self.pool.total_supply - MINIMUM_LIQUIDITY
            return
        pool = self.pool
        if pool is None or not self.hype_block <= number <= self.drain_block:
            return
        if number == self.hype_block:
            self._hype_budget = int(pool.reserve1 * (math.sqrt(self.price_multiple) - 1))
        if number < self.drain_block:
            step = number - self.hype_block
            for buyer, (buy_step, weight) in zip(self.buyers, self._buys, strict=True):
                if buy_step == step:
                    world.swap(buyer, pool, True, int(self._hype_budget * weight))
        elif self.method == "remove_liquidity":
            liquidity = min(self._lp, pool.total_supply - MINIMUM_LIQUIDITY)
            world.remove_liquidity(self.creator, pool, liquidity)
        else:
            world.swap(self.creator, pool, False, self.hoard)

    def truth(self) -> dict[str, Any]:
        return self._truth(
            [self.creator, *self.buyers],
            {"launch": self.start_block, "hype": self.hype_block, "drain": self.drain_block},
            token=self.token, creator=self.creator, method=self.method,
        )
