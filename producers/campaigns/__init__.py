"""Labelled fraud campaigns woven into the synthetic chain.

A campaign is planned when the chain is built (who takes part, which pool, the block of each
phase) and then acts block by block through :class:`~producers.world.World`, so its trades
move reserves and prices exactly like everyone else's. ``truth()`` is its ground truth:
``campaign_id``, ``type``, ``subject``, sorted ``participants``, ``start_block``, ``phases``
(name → block), ``end_block`` (exclusive), plus keys of its type.

``difficulty`` (0 blatant … 1 subtle) scales how loud a campaign is relative to its pool's or
the chain's normal activity. The types:

* :class:`PumpAndDump`: insiders accumulate, sybil buyers pump, insiders dump;
* :class:`RugPull`: a new token and pool, a hype of buyers, the creator drains the pool;
* :class:`WashTrading`: a cluster trades one pool in circles, volume without a position;
* :class:`AnomalousTransfer`: a dormant wallet wakes up, a fan-out, or a peel chain.

>>> sorted(CAMPAIGN_TYPES)
['anomalous_transfer', 'pump_and_dump', 'rug_pull', 'wash_trading']
"""

from producers.campaigns.anomalous_transfer import AnomalousTransfer
from producers.campaigns.base import Campaign, CampaignFactory
from producers.campaigns.pump_and_dump import PumpAndDump
from producers.campaigns.rug_pull import RugPull
from producers.campaigns.schedule import CAMPAIGN_TYPES, schedule_campaigns
from producers.campaigns.wash_trading import WashTrading

__all__ = [
    "CAMPAIGN_TYPES",
    "AnomalousTransfer",
    "Campaign",
    "CampaignFactory",
    "PumpAndDump",
    "RugPull",
    "WashTrading",
    "schedule_campaigns",
]
