"""Pump and dump: insiders accumulate, sybil buyers pump the price, insiders dump into it."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from producers.campaigns.base import Campaign

if TYPE_CHECKING:
    from producers.amm import Pool
    from producers.world import World


class PumpAndDump(Campaign):
    """Insiders accumulate quietly, fresh wallets buy in a burst, insiders dump into it.

    Phases: ``accumulation`` (start) → ``pump`` → ``dump`` → end. ``difficulty`` lowers the
    number of sybil buyers, the share of the pool accumulated and the price move.
    """

    type = "pump_and_dump"

    def __init__(self, campaign_id: str, start_block: int, world: World, pool: Pool,
                 difficulty: float) -> None:
        super().__init__(campaign_id, start_block)
        rng = world.rng
        loud = 1.0 - difficulty
        self.pool = pool
        self.insiders = [world.fresh_wallet(campaign_id + "/insider") for _ in
                         range(rng.randint(3, 6))]
        self.buyers = [world.fresh_wallet(campaign_id + "/buyer") for _ in
                       range(int(rng.uniform(15, 25) + 35 * loud))]
        self.accumulation_blocks = rng.randint(15, 30)
        self.pump_blocks = rng.randint(6, 12)
        self.dump_blocks = rng.randint(1, 2)
        self.accumulation_share = 0.03 + 0.07 * loud  # of the WETH reserve, in total
        self.price_multiple = 1.4 + 1.8 * loud  # price at the pump's top vs its start
        weights = [rng.lognormvariate(0, 0.8) for _ in self.buyers]
        total = sum(weights)
        self._buyer_weights = [w / total for w in weights]
        self._holdings: dict[str, int] = {}
        self._pump_budget = 0

    @property
    def pump_block(self) -> int:
        return self.start_block + self.accumulation_blocks

    @property
    def dump_block(self) -> int:
        return self.pump_block + self.pump_blocks

    @property
    def duration(self) -> int:
        return self.accumulation_blocks + self.pump_blocks + self.dump_blocks

    @property
    def subject(self) -> str:
        return self.pool.address

    def act(self, world: World) -> None:
        number, rng, pool = world.block.number, world.rng, self.pool
        if not self.active(number):
            return
        if number < self.pump_block:
            per_block = pool.reserve1 * self.accumulation_share / self.accumulation_blocks
            for insider in self.insiders:
                if rng.random() < 0.5:
                    spend = int(per_block * 2 / len(self.insiders) * rng.uniform(0.5, 1.5))
                    got = world.swap(insider, pool, True, spend)
                    self._holdings[insider] = self._holdings.get(insider, 0) + got
        elif number < self.dump_block:
            if number == self.pump_block:
                self._pump_budget = int(pool.reserve1 * (math.sqrt(self.price_multiple) - 1))
            step = number - self.pump_block
            for i, buyer in enumerate(self.buyers):
                if i % self.pump_blocks == step:
                    world.swap(buyer, pool, True, int(self._pump_budget
                                                      * self._buyer_weights[i]))
        else:
            sellers = self.insiders if self.dump_blocks == 1 else (
                self.insiders[::2] if number == self.dump_block else self.insiders[1::2])
            for insider in sellers:
                world.swap(insider, pool, False, self._holdings.pop(insider, 0))

    def truth(self) -> dict[str, Any]:
        return self._truth(
            self.insiders + self.buyers,
            {"accumulation": self.start_block, "pump": self.pump_block,
             "dump": self.dump_block},
            token=self.pool.token0, insiders=sorted(self.insiders),
        )
