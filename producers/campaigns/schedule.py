"""The registry of campaign types and the planner that spreads campaigns over a run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from producers.campaigns.anomalous_transfer import AnomalousTransfer
from producers.campaigns.base import Campaign, CampaignFactory
from producers.campaigns.pump_and_dump import PumpAndDump
from producers.campaigns.rug_pull import RugPull
from producers.campaigns.wash_trading import WashTrading

if TYPE_CHECKING:
    from producers.world import World

CAMPAIGN_TYPES: dict[str, CampaignFactory] = {
    "pump_and_dump": PumpAndDump,
    "rug_pull": RugPull,
    "wash_trading": WashTrading,
    "anomalous_transfer": AnomalousTransfer,
}


def schedule_campaigns(world: World) -> list[Campaign]:
    """Plan every campaign of the config: spread over the run, one pool at a time each.

    A pool is busy while a campaign about it (its subject) runs; campaigns that launch their
    own pool or move ETH between wallets leave the pool they were offered free.
    """
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
            busy_until[campaign.subject] = campaign.end_block
            campaigns.append(campaign)
    campaigns.sort(key=lambda c: (c.start_block, c.campaign_id))
    return campaigns
