"""Labelled fraud campaigns woven into the synthetic chain.

A campaign is planned when the chain is built (who takes part, which pool, the block of each
phase) and then acts block by block through :class:`~producers.synth.World`, so its trades
move reserves and prices exactly like everyone else's. ``truth()`` is its ground truth.

``difficulty`` (0 … 1) scales how loud a campaign is relative to its pool: fewer sybil buyers,
a smaller price move, slower accumulation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producers.amm import Pool
    from producers.synth import World


class Campaign:
    """Base class: a planned fraud with phases and participants."""

    type: str = ""

    def __init__(self, campaign_id: str, start_block: int) -> None:
        self.campaign_id = campaign_id
        self.start_block = start_block

    @property
    def duration(self) -> int:
        raise NotImplementedError

    @property
    def end_block(self) -> int:
        return self.start_block + self.duration

    def act(self, world: World) -> None:
        """Write this block's trades of the campaign (nothing outside its blocks)."""
        raise NotImplementedError

    def truth(self) -> dict[str, Any]:
        raise NotImplementedError


class PumpAndDump(Campaign):
    """Insiders accumulate quietly, fresh wallets buy in a burst, insiders dump into it.

    Phases: ``accumulation`` (start) → ``pump`` → ``dump`` → end.
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

    def act(self, world: World) -> None:
        number, rng, pool = world.block.number, world.rng, self.pool
        if not self.start_block <= number < self.end_block:
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
        return {
            "campaign_id": self.campaign_id,
            "type": self.type,
            "subject": self.pool.address,
            "token": self.pool.token0,
            "participants": sorted(self.insiders + self.buyers),
            "insiders": sorted(self.insiders),
            "start_block": self.start_block,
            "phases": {"accumulation": self.start_block, "pump": self.pump_block,
                       "dump": self.dump_block},
            "end_block": self.end_block,
        }


CampaignFactory = Callable[[str, int, "World", "Pool", float], Campaign]
CAMPAIGN_TYPES: dict[str, CampaignFactory] = {"pump_and_dump": PumpAndDump}


def schedule_campaigns(world: World) -> list[Campaign]:
    """Plan every campaign of the config: spread over the run, one pool at a time each."""
    cfg, rng = world.config, world.rng
    campaigns: list[Campaign] = []
    busy_until: dict[str, int] = {}
    for kind, per_thousand in sorted(cfg.campaigns.items()):
        factory = CAMPAIGN_TYPES.get(kind)
        if factory is None:
            raise ValueError(f"unknown campaign type {kind!r}; known: {sorted(CAMPAIGN_TYPES)}")
        count = max(1, round(per_thousand * cfg.blocks / 1000)) if per_thousand > 0 else 0
        slot = cfg.blocks / max(count, 1)
        for i in range(count):
            earliest = cfg.start_block + int(i * slot + min(20, slot * 0.2))
            start = earliest + rng.randint(0, max(0, int(slot * 0.3)))
            free = [p for p in world.pools if busy_until.get(p.address, 0) <= start]
            pool = rng.choice(free or world.pools)
            campaign = factory(f"{kind}-{cfg.seed}-{i}", start, world, pool, cfg.difficulty)
            busy_until[pool.address] = campaign.end_block
            campaigns.append(campaign)
    campaigns.sort(key=lambda c: (c.start_block, c.campaign_id))
    return campaigns
