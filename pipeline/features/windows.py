"""Block windows with running aggregates: each event costs O(1), nothing is re-scanned.

* :class:`BlockRing` — the closing value of each of the last ``size`` blocks (carried
  forward over blocks without events), for returns and drops over several windows;
* :class:`TradeWindow` — the swaps of the last ``blocks`` blocks of one pool, with running
  counts, WETH volumes, distinct buyers, fresh buyers, buyer concentration and round-trip
  volume, all kept exactly in integers and updated on entry and on expiry;
* :class:`Counterparties` — the distinct counterparties of one address over its last
  ``blocks`` blocks.

Each saves its contents with ``state()`` and takes them back with ``load_state`` (plain data,
:mod:`pipeline.state`); its size in blocks is configuration and not saved.

>>> ring = BlockRing(8)
>>> ring.set(10, 1.0); ring.set(12, 2.0)
>>> ring.at(11), ring.at(12), ring.at(3)
(1.0, 2.0, None)
"""

from __future__ import annotations

from collections import deque
from typing import Any

from pipeline.state import StateError, fields


class BlockRing:
    """Closing values of the last ``size`` blocks; blocks without a value repeat the last."""

    __slots__ = ("block", "first", "size", "values")

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: list[float] = [0.0] * size
        self.block = -1  # the newest block written
        self.first = -1  # the oldest block with a value

    def set(self, block: int, value: float, carry: float | None = None) -> None:
        """Set the value of ``block``; a block older than the newest is ignored.

        Blocks skipped since the newest repeat its value, or ``carry`` when given (a ring of
        per-block maxima carries the last close, not the last maximum)."""
        last = self.block
        if block < last:
            return
        size, values = self.size, self.values
        if last < 0:
            self.first = block
        elif block > last:
            carried = values[last % size] if carry is None else carry
            for b in range(last + 1, min(block, last + size + 1)):
                values[b % size] = carried
        self.block = block
        values[block % size] = value

    def state(self) -> dict[str, Any]:
        return {"v": 1, "block": self.block, "first": self.first, "values": list(self.values)}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "block ring", 1, block=int, first=int, values=list)
        values = state["values"]
        if len(values) != self.size or not all(isinstance(v, float | int) for v in values):
            raise StateError(f"block ring state: expected {self.size} numbers, got "
                             f"{len(values)} values")
        self.block, self.first = state["block"], state["first"]
        self.values = [float(v) for v in values]

    def at(self, block: int) -> float | None:
        """The close of ``block``: None before the first value or beyond the ring."""
        if block < self.first or block > self.block or block <= self.block - self.size:
            return None
        return self.values[block % self.size]

    def max_since(self, block: int) -> float:
        """The largest close from ``block`` to the newest (a handful of slots)."""
        start = max(block, self.first, self.block - self.size + 1)
        values, size = self.values, self.size
        return max((values[b % size] for b in range(start, self.block + 1)), default=0.0)


class TradeWindow:
    """Swaps of one pool over its last ``blocks`` blocks, with running aggregates.

    Per trader it keeps ``[buys, sells, weth bought with, weth sold for, fresh]``. From
    those it maintains, without re-scanning: distinct buyers and how many of them are fresh
    wallets, the sum of squared WETH per buyer (for the Herfindahl-Hirschman concentration),
    the number of two-sided traders and the round-trip volume ``Σ min(bought, sold)``.

    >>> w = TradeWindow(blocks=5)
    >>> w.add(1, "a", True, 100, fresh=True); w.add(1, "b", True, 100); w.add(2, "a", False, 60)
    >>> w.buyers, w.fresh_buyers, w.hhi(), w.round_trip, w.two_sided
    (2, 1, 0.5, 60, 1)
    >>> w.expire(6); w.buyers, w.sell_weth, w.round_trip
    (0, 60, 0)
    """

    __slots__ = ("blocks", "buy_weth", "buyer_sq", "buyers", "buys", "fresh_buyers",
                 "round_trip", "sell_weth", "sells", "traders", "trades", "two_sided")

    def __init__(self, blocks: int) -> None:
        self.blocks = blocks
        self.trades: deque[tuple[int, str, bool, int, str]] = deque()
        self.traders: dict[str, list[int]] = {}
        self.buys = self.sells = 0
        self.buy_weth = self.sell_weth = 0
        self.buyers = self.fresh_buyers = self.two_sided = 0
        self.buyer_sq = 0
        self.round_trip = 0

    def add(self, block: int, trader: str, buy: bool, weth: int, *, fresh: bool = False,
            item_id: str = "") -> None:
        self.expire(block)
        self.trades.append((block, trader, buy, weth, item_id))
        entry = self.traders.get(trader)
        if entry is None:
            entry = self.traders[trader] = [0, 0, 0, 0, 0]
        self._apply(entry, buy, weth, 1, fresh)

    def state(self) -> dict[str, Any]:
        """The swaps in order, each trader's entry and the running aggregates (exact ints)."""
        return {"v": 1, "trades": [list(t) for t in self.trades],
                "traders": {t: list(e) for t, e in self.traders.items()},
                "totals": [self.buys, self.sells, self.buy_weth, self.sell_weth, self.buyers,
                           self.fresh_buyers, self.two_sided, self.buyer_sq, self.round_trip]}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "trade window", 1, trades=list, traders=dict, totals=list)
        try:
            trades = deque((int(b), str(t), bool(buy), int(w), str(i))
                           for b, t, buy, w, i in state["trades"])
            traders = {str(t): [int(n) for n in e] for t, e in state["traders"].items()}
            (self.buys, self.sells, self.buy_weth, self.sell_weth, self.buyers,
             self.fresh_buyers, self.two_sided, self.buyer_sq,
             self.round_trip) = (int(n) for n in state["totals"])
        except (TypeError, ValueError) as exc:
            raise StateError(f"trade window state does not fit: {exc}") from exc
        if any(len(e) != 5 for e in traders.values()):
            raise StateError("trade window state: a trader entry is not 5 counts")
        self.trades, self.traders = trades, traders

    def expire(self, block: int) -> None:
        """Drop the swaps older than the window ending at ``block``."""
        trades, horizon = self.trades, block - self.blocks
        while trades and trades[0][0] <= horizon:
            _, trader, buy, weth, _ = trades.popleft()
            entry = self.traders[trader]
            self._apply(entry, buy, weth, -1, False)
            if entry[0] == 0 and entry[1] == 0:
                del self.traders[trader]

    def _apply(self, entry: list[int], buy: bool, weth: int, sign: int, fresh: bool) -> None:
        was_two_sided = entry[0] > 0 and entry[1] > 0
        old_min = min(entry[2], entry[3])
        if buy:
            old = entry[2]
            if sign > 0 and entry[0] == 0:
                self.buyers += 1
                entry[4] = int(fresh)
                self.fresh_buyers += entry[4]
            entry[0] += sign
            entry[2] = old + sign * weth
            self.buys += sign
            self.buy_weth += sign * weth
            self.buyer_sq += entry[2] * entry[2] - old * old
            if entry[0] == 0:
                self.buyers -= 1
                self.fresh_buyers -= entry[4]
                entry[4] = 0
        else:
            entry[1] += sign
            entry[3] += sign * weth
            self.sells += sign
            self.sell_weth += sign * weth
        self.round_trip += min(entry[2], entry[3]) - old_min
        self.two_sided += int(entry[0] > 0 and entry[1] > 0) - int(was_two_sided)

    def hhi(self) -> float:
        """Concentration of WETH bought across buyers: 1/n for n equal buyers, 1 for one."""
        total = self.buy_weth
        return self.buyer_sq / (total * total) if total else 0.0

    def item_ids(self, buys_only: bool = False, limit: int = 64) -> list[str]:
        """Item ids of the window's swaps (the newest ``limit``), oldest first."""
        ids = [t[4] for t in self.trades if t[2] or not buys_only]
        return ids[-limit:]

    def top_traders(self, two_sided: bool = False, limit: int = 16) -> list[str]:
        """Traders by WETH traded, largest first (ties by address): at alert time only."""
        pool = [(-(e[2] + e[3]), t) for t, e in self.traders.items()
                if not two_sided or (e[0] > 0 and e[1] > 0)]
        return [t for _, t in sorted(pool)[:limit]]


class Counterparties:
    """Distinct counterparties of one address over its last ``blocks`` blocks.

    Events sit in a plain list (far smaller than a deque for the few events most addresses
    have), trimmed from the front as they leave the window.

    >>> c = Counterparties(blocks=10)
    >>> c.add(1, "a", 1.0, flag=True); c.add(2, "a", 2.0); c.add(5, "b", 4.0)
    >>> c.distinct, c.count, c.value, c.flagged
    (2, 3, 7.0, 1)
    >>> c.expire(12); c.distinct, c.count, c.value, c.flagged
    (1, 1, 4.0, 0)
    """

    __slots__ = ("blocks", "counts", "events", "flagged", "value")

    def __init__(self, blocks: int) -> None:
        self.blocks = blocks
        self.events: list[tuple[int, str, float, bool]] = []
        self.counts: dict[str, int] = {}
        self.value = 0.0
        self.flagged = 0  # events added with ``flag`` (e.g. to a never-seen counterparty)

    def add(self, block: int, other: str, value: float, flag: bool = False) -> None:
        self.expire(block)
        self.events.append((block, other, value, flag))
        self.counts[other] = self.counts.get(other, 0) + 1
        self.value += value
        self.flagged += flag

    def state(self) -> dict[str, Any]:
        return {"v": 1, "events": [list(e) for e in self.events], "counts": dict(self.counts),
                "value": self.value, "flagged": self.flagged}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "counterparties", 1, events=list, counts=dict, value=float, flagged=int)
        try:
            events = [(int(b), str(o), float(v), bool(f)) for b, o, v, f in state["events"]]
            counts = {str(k): int(n) for k, n in state["counts"].items()}
        except (TypeError, ValueError) as exc:
            raise StateError(f"counterparties state does not fit: {exc}") from exc
        self.events, self.counts = events, counts
        self.value, self.flagged = float(state["value"]), state["flagged"]

    def expire(self, block: int) -> None:
        events, horizon = self.events, block - self.blocks
        if not events or events[0][0] > horizon:
            return
        counts, gone = self.counts, 0
        for when, other, value, flag in events:
            if when > horizon:
                break
            gone += 1
            left = counts[other] - 1
            if left:
                counts[other] = left
            else:
                del counts[other]
            self.value -= value
            self.flagged -= flag
        del events[:gone]
        if not events:
            self.value = 0.0  # no float residue once empty

    @property
    def distinct(self) -> int:
        return len(self.counts)

    @property
    def count(self) -> int:
        return len(self.events)
