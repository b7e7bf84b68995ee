"""A bounded map of per-key feature state: least recently seen keys are evicted first.

Every feature store of :mod:`pipeline.features` keeps its per-key state (a pool, an address)
in a :class:`KeyedStore`. A key is evicted when it has not been seen for ``idle_blocks``
blocks of stream time, or when the store holds ``max_keys`` keys and a new one arrives;
:attr:`KeyedStore.evictions` counts both, for the service to export as a metric. Memory is
therefore bounded by ``max_keys`` whatever the stream, and a quiet key costs nothing after
``idle_blocks``.

>>> store = KeyedStore(Seen, max_keys=2, idle_blocks=100)
>>> [store.get(k, b).first_block for k, b in (("a", 1), ("b", 2), ("a", 3), ("c", 4))]
[1, 2, 1, 4]
>>> sorted(store), store.evictions  # "b" was the least recently seen when "c" arrived
(['a', 'c'], 1)
>>> store.get("d", 500).first_block, len(store), store.evictions  # a and c idle too long
(500, 1, 3)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from pipeline.state import StateError, fields


class Tracked(Protocol):
    """Per-key state knows the last block its key was seen in, and saves itself as plain
    data (:mod:`pipeline.state`)."""

    last_block: int

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...


V = TypeVar("V", bound=Tracked)


class Seen:
    """The smallest per-key state: when a key was first and last seen."""

    __slots__ = ("first_block", "last_block")

    def __init__(self, block: int) -> None:
        self.first_block = block
        self.last_block = block

    def state(self) -> dict[str, Any]:
        return {"v": 1, "first_block": self.first_block, "last_block": self.last_block}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "seen key", 1, first_block=int, last_block=int)
        self.first_block, self.last_block = state["first_block"], state["last_block"]


class KeyedStore(Generic[V]):
    """key → state, created on first sight by ``factory(block)``, evicted when idle or full.

    Keys are kept in recency order, so eviction only ever looks at the front: O(1) per
    access. :meth:`state` saves the keys in that order with each one's own state and the
    eviction counter; :meth:`load_state` rebuilds every value with ``factory`` and loads its
    state into it (the limits are configuration, not state).
    """

    def __init__(self, factory: Callable[[int], V], max_keys: int = 100_000,
                 idle_blocks: int = 50_000) -> None:
        if max_keys < 1 or idle_blocks < 1:
            raise ValueError("max_keys and idle_blocks must be positive")
        self.factory = factory
        self.max_keys = max_keys
        self.idle_blocks = idle_blocks
        self.evictions = 0
        self._items: OrderedDict[str, V] = OrderedDict()

    def get(self, key: str, block: int) -> V:
        """The state of ``key`` (created if new), marked as seen in ``block``."""
        items = self._items
        state = items.get(key)
        if state is None:
            state = items[key] = self.factory(block)
            self._evict(block)
        else:
            items.move_to_end(key)
        state.last_block = max(state.last_block, block)
        return state

    def peek(self, key: str) -> V | None:
        """The state of ``key`` if tracked, without touching its recency."""
        return self._items.get(key)

    def _evict(self, block: int) -> None:
        items = self._items
        horizon = block - self.idle_blocks
        while len(items) > self.max_keys:
            items.popitem(last=False)
            self.evictions += 1
        while items:
            oldest = next(iter(items.values()))
            if oldest.last_block >= horizon:
                break
            items.popitem(last=False)
            self.evictions += 1

    def state(self) -> dict[str, Any]:
        return {"v": 1, "evictions": self.evictions,
                "items": [[key, value.state()] for key, value in self._items.items()]}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "keyed store", 1, evictions=int, items=list)
        items: OrderedDict[str, V] = OrderedDict()
        for entry in state["items"]:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
                raise StateError("keyed store state: an item is not a [key, state] pair")
            value = self.factory(0)
            value.load_state(entry[1])
            items[entry[0]] = value
        self.evictions = state["evictions"]
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items
