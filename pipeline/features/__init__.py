"""Features: incremental, bounded-memory state per key, turned into flat ``dict[str, float]``.

Each feature store folds one record at a time into running aggregates over block windows
(nothing is re-scanned) and returns the features of the record's key after it:

* :class:`PoolFeatures` — per pool, from the DEX topic: price from reserves, returns over
  several windows, volume, buy/sell imbalance, unique and fresh buyers, buyer concentration,
  round-trip trading, liquidity level, drawdown and LP removals;
* :class:`AddressFeatures` — per address, from the transactions topic: activity and value
  statistics, fan-in and fan-out, age and dormancy, and the gas price against an online
  estimate of the block's base fee (:class:`BaseFee`).

Memory is bounded: every store keeps its keys in a :class:`KeyedStore`, which evicts keys
idle for ``idle_blocks`` and the least recently seen beyond ``max_keys``; the ``evictions``
attribute of each store counts them for the service's metrics.

Every store, window and per-key state saves itself as plain data with ``state()`` and takes
it back with ``load_state(state)`` (:mod:`pipeline.state`): keys in recency order, eviction
counts and exact integer aggregates included; limits and window sizes are configuration.

Blocks may come out of order (a late record, the same chain produced twice into one broker):
every feature stays defined and finite, ages and idle times clamp at 0, and no record moves a
key's state so that a later one fails. Implausible block numbers never get here: records
reject them (:data:`~pipeline.records.MAX_BLOCK_NUMBER`).
"""

from pipeline.features.addresses import AddressFeatures, AddressState, BaseFee
from pipeline.features.pools import WETH, PoolFeatures, PoolState
from pipeline.features.store import KeyedStore, Seen
from pipeline.features.windows import BlockRing, Counterparties, TradeWindow

__all__ = [
    "WETH",
    "AddressFeatures",
    "AddressState",
    "BaseFee",
    "BlockRing",
    "Counterparties",
    "KeyedStore",
    "PoolFeatures",
    "PoolState",
    "Seen",
    "TradeWindow",
]
