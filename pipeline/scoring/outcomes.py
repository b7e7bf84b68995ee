"""Delayed outcomes of pools, in stream time: what a pool risk model learns from.

A pool risk model scores, at every pool event, the chance that the pool will be drained or
crash within ``horizon_blocks``. Its labels come from the stream itself, later:
:class:`PoolOutcomes` keeps a few snapshots of each pool's features (geometrically spaced in
the pool's age: its first event, then whenever its age has grown by a quarter, at least
``min_gap_blocks`` apart) and releases each as a labelled example

* **1, drained or crashed**, at the block where the pool's WETH reserve falls to
  ``1 - drop`` of its running peak or below, or its price does (a peak of at least
  ``min_peak_weth`` WETH), for every snapshot taken within ``horizon_blocks`` before and at
  least ``min_lead_blocks`` before that block; the pool then counts as ended and is no
  longer sampled;
* **0, survived**, at ``snapshot block + horizon_blocks`` if the pool had no such event by
  then.

So no label is known before its release block, and everything depends only on the order of
the DEX events of one partition (the same in every replay). The event test is online: it
cannot know whether the pool recovers later, as the evaluator's unrecovered drains and crashes
do (:func:`pipeline.evaluation.crash_events`). Memory is bounded: at most
``max_per_pool`` snapshots per pool and ``max_snapshots`` in all (the oldest dropped first,
counted in :attr:`PoolOutcomes.dropped`); ended pools are forgotten after ``horizon_blocks``.

>>> o = PoolOutcomes(horizon_blocks=100, min_gap_blocks=10)
>>> x = {"liquidity_weth": 10.0, "liquidity_peak_weth": 10.0, "drawdown": 0.0}
>>> [len(o.observe("pool", b, x)) for b in (1, 5, 20, 60)]  # snapshots, no label yet
[0, 0, 0, 0]
>>> pairs = o.observe("pool", 70, x | {"liquidity_weth": 0.5, "drawdown": 0.95})
>>> [(round(s["liquidity_weth"]), y) for s, y in pairs]  # released at the drain
[(10, 1), (10, 1), (10, 1)]
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from pipeline.state import StateError, fields


class PoolOutcomes:
    """Snapshots of pool features awaiting their outcome (see the module docstring)."""

    def __init__(self, *, horizon_blocks: int = 6_500, drop: float = 0.9,
                 min_peak_weth: float = 1.0, min_gap_blocks: int = 10,
                 min_lead_blocks: int = 1, max_per_pool: int = 24,
                 max_snapshots: int = 20_000) -> None:
        self.horizon_blocks = horizon_blocks
        self.drop = drop
        self.min_peak_weth = min_peak_weth
        self.min_gap_blocks = min_gap_blocks
        self.min_lead_blocks = min_lead_blocks
        self.max_per_pool = max_per_pool
        self.max_snapshots = max_snapshots
        # pool -> its snapshots (block, features), oldest first
        self.snapshots: OrderedDict[str, deque[tuple[int, dict[str, float]]]] = OrderedDict()
        self.first: dict[str, int] = {}  # pool -> block of its first snapshot (its birth)
        self.ended: OrderedDict[str, int] = OrderedDict()  # pool -> block of its event
        # every snapshot (block, pool) in the order taken: the survivors' release queue
        # (entries of snapshots since released or dropped are skipped when reached)
        self.queue: deque[tuple[int, str]] = deque()
        self.count = 0
        self.dropped = 0
        self.positives = 0
        self.negatives = 0
        self.block = 0  # the newest block seen

    def observe(self, pool: str, block: int, x: dict[str, float]) -> list[
            tuple[dict[str, float], int]]:
        """Take in one event of ``pool``; return the labelled snapshots it releases."""
        released: list[tuple[dict[str, float], int]] = []
        if block > self.block:
            self.block = block
            released += self._survivors(block)
        if pool in self.ended:
            return released
        if self._ends(x):
            released += self._end(pool, block)
        elif x.get("liquidity_weth", 0.0) > 0.0:
            self._snapshot(pool, block, x)
        return released

    def _ends(self, x: dict[str, float]) -> bool:
        if x.get("liquidity_peak_weth", 0.0) < self.min_peak_weth:
            return False
        return x.get("drawdown", 0.0) >= self.drop or x.get("price_drop_peak", 0.0) >= self.drop

    def _end(self, pool: str, block: int) -> list[tuple[dict[str, float], int]]:
        kept = self.snapshots.pop(pool, deque())
        self.first.pop(pool, None)
        self.count -= len(kept)
        self.ended[pool] = block
        out = [(x, 1) for b, x in kept if block - self.min_lead_blocks >= b]
        self.positives += len(out)
        return out

    def _snapshot(self, pool: str, block: int, x: dict[str, float]) -> None:
        kept = self.snapshots.get(pool)
        if kept is None:
            kept = self.snapshots[pool] = deque()
            self.first[pool] = block
        elif kept:
            last = kept[-1][0]
            age = last - self.first[pool]
            if block - last < max(self.min_gap_blocks, age // 4):
                return
        kept.append((block, dict(x)))
        self.queue.append((block, pool))
        self.count += 1
        if len(kept) > self.max_per_pool:
            kept.popleft()
            self.count -= 1
            self.dropped += 1
        while self.count > self.max_snapshots:
            oldest_pool = next(iter(self.snapshots))
            oldest = self.snapshots[oldest_pool]
            oldest.popleft()
            self.count -= 1
            self.dropped += 1
            if not oldest:
                del self.snapshots[oldest_pool]
                self.first.pop(oldest_pool, None)
        if pool in self.snapshots:
            self.snapshots.move_to_end(pool)

    def _survivors(self, block: int) -> list[tuple[dict[str, float], int]]:
        """Snapshots whose horizon has passed without an event: labelled 0."""
        out: list[tuple[dict[str, float], int]] = []
        due = block - self.horizon_blocks
        queue = self.queue
        while queue and queue[0][0] <= due:
            taken, pool = queue.popleft()
            kept = self.snapshots.get(pool)
            if not kept or kept[0][0] != taken:
                continue  # released at its pool's event, or dropped
            out.append((kept.popleft()[1], 0))
            self.count -= 1
            if not kept:
                del self.snapshots[pool]
                self.first.pop(pool, None)
        while self.ended and next(iter(self.ended.values())) <= due:
            self.ended.popitem(last=False)
        self.negatives += len(out)
        return out

    def state(self) -> dict[str, Any]:
        return {"v": 1, "block": self.block,
                "counts": [self.count, self.dropped, self.positives, self.negatives],
                "snapshots": [[pool, self.first.get(pool, 0), [[b, x] for b, x in kept]]
                              for pool, kept in self.snapshots.items()],
                "ended": [[pool, b] for pool, b in self.ended.items()],
                "queue": [[b, pool] for b, pool in self.queue]}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "pool outcomes", 1, block=int, counts=list, snapshots=list, ended=list,
               queue=list)
        try:
            self.snapshots = OrderedDict(
                (str(pool), deque((int(b), {str(k): float(v) for k, v in x.items()})
                                  for b, x in kept))
                for pool, _, kept in state["snapshots"])
            self.first = {str(pool): int(first) for pool, first, _ in state["snapshots"]}
            self.ended = OrderedDict((str(p), int(b)) for p, b in state["ended"])
            self.queue = deque((int(b), str(p)) for b, p in state["queue"])
            self.count, self.dropped, self.positives, self.negatives = map(
                int, state["counts"])
        except (TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"pool outcomes state does not fit: {exc}") from exc
        self.block = state["block"]
