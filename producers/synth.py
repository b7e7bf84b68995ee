"""A deterministic synthetic chain: wallets, tokens, constant-product pools, and labelled fraud.

The world (:mod:`producers.world`, fixed by ``seed``):

* wallets with heavy-tailed activity: a Pareto weight each, so a few are very active and most
  are rare; a share of them are contracts;
* ERC-20 tokens, each paired with WETH in a Uniswap-V2-style pool (:mod:`producers.amm`) whose
  reserves and price follow from the trades exactly;
* blocks every ``block_time_s`` seconds with an EIP-1559-like base fee that moves with how full
  the previous block was; traffic with a daily rhythm: ETH transfers, swaps that lean back
  towards each token's fair price, and occasional liquidity adds and removes.

Campaigns (:mod:`producers.campaigns`) are scheduled into this traffic and write their own
trades; each one's ground truth (participants, phase boundaries) is in :attr:`truth`.

>>> chain = SyntheticChain(SynthConfig(seed=1, blocks=3))
>>> [len(b.transactions) > 0 for b in chain.blocks()]
[True, True, True]
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

from producers.campaigns import schedule_campaigns
from producers.world import ETHER, TRANSFER_GAS, Block, SynthConfig, World

__all__ = ["Block", "SynthConfig", "SyntheticChain"]


class SyntheticChain:
    """Iterates blocks of background traffic with the configured campaigns woven in."""

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        self.world = World(config)
        self.campaigns = schedule_campaigns(self.world)

    @property
    def truth(self) -> list[dict[str, Any]]:
        """Ground truth of every scheduled campaign, in start order."""
        return [c.truth() for c in self.campaigns]

    def blocks(self) -> Iterator[Block]:
        world, cfg = self.world, self.config
        for _ in range(cfg.blocks):
            block = world.block
            hour_angle = 2 * math.pi * (block.timestamp % 86_400) / 86_400
            rate = cfg.txs_per_block * (1 + 0.35 * math.sin(hour_angle - math.pi / 2))
            for _ in range(_poisson(world.rng, rate)):
                self._background_tx()
            for campaign in self.campaigns:
                campaign.act(world)
            yield block
            world.next_block()

    def _background_tx(self) -> None:
        world, rng, cfg = self.world, self.world.rng, self.config
        roll = rng.random()
        sender = world.pick_wallet()
        if roll < cfg.swap_share:
            pool = rng.choice(world.pools)
            fair = world.fair_price[pool.address]
            lean = max(-0.3, min(0.3, 2.0 * math.log(fair / pool.price))) if pool.price else 0
            buy = rng.random() < 0.5 + lean
            weth = int(pool.reserve1 * rng.lognormvariate(math.log(0.002), 1.0))
            weth = min(weth, pool.reserve1 // 20)
            if buy:
                world.swap(sender, pool, True, weth)
            else:
                world.swap(sender, pool, False, int(weth / pool.price) if pool.price else 0)
        elif roll < cfg.swap_share + cfg.liquidity_share:
            pool = rng.choice(world.pools)
            if rng.random() < 0.6:
                world.add_liquidity(sender, pool, int(pool.reserve1 * rng.uniform(0.005, 0.03)))
            else:
                world.remove_liquidity(sender, pool,
                                       int(pool.total_supply * rng.uniform(0.005, 0.02)))
        else:
            to = world.pick_wallet()
            value = int(rng.lognormvariate(math.log(0.3), 1.8) * ETHER)
            gas = TRANSFER_GAS if to not in world.contracts else 60_000
            world.transaction(sender, to, value, gas)


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method for small rates, a rounded normal for large ones."""
    if lam > 50:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
