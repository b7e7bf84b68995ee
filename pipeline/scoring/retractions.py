"""Alerts withdrawn when their block is orphaned: one ``retraction`` alert naming them.

A live source (``chainwatch produce rpc``) that sees a reorg sends a
:class:`~pipeline.records.Retraction` for each orphaned block to every partition it wrote
that block's records to, after those records and before the new branch's. Each scorer task
remembers which of its alerts were raised by the records of each recent block (the last
:data:`KEEP_BLOCKS` blocks it alerted on); on a retraction it forgets the block's alerts and
raises one alert of type ``retraction`` naming them (``evidence.retracted``), which the alert
store and the web view mark them by. Its id covers the retracted ids, so two tasks retracting
their own alerts of one block raise two distinct retractions, and a replay the same one.

What the orphaned records taught the features and models is not undone: a few blocks'
worth of drift, documented in the README.

>>> from pipeline.records import Retraction
>>> r = Retractions()
>>> a = Alert.build(type="rug_pull", severity="high", score=0.9, subject="0xp", detector="d",
...                 model_version="1", evidence={}, source={"item_ids": ["log_1"]},
...                 event_time=100, detected_at=100, labels={"block_number": 7})
>>> r.note([a])
>>> [x.evidence["retracted"] == [a.alert_id] for x in r.retract(
...     Retraction(7, "0x" + "ab" * 32, "reorg"), {})]
[True]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline.alerts import Alert
from pipeline.records import Retraction

KEEP_BLOCKS = 512  # the deepest reorg whose alerts are retracted (Ethereum's are 1-2 deep)
DETECTOR = "reorg"


class Retractions:
    """The alerts raised per recent block, and their retraction."""

    def __init__(self) -> None:
        self.by_block: dict[int, list[tuple[str, int]]] = {}  # block: [(alert id, time)]
        self.raised = 0

    def note(self, alerts: Iterable[Alert]) -> None:
        """Remember ``alerts`` (raised by chain records) under their block."""
        for a in alerts:
            block = a.labels.get("block_number")
            if type(block) is not int:
                continue
            self.by_block.setdefault(block, []).append((a.alert_id, a.event_time))
            while len(self.by_block) > KEEP_BLOCKS:
                del self.by_block[min(self.by_block)]

    def retract(self, record: Retraction, source: dict[str, Any]) -> list[Alert]:
        """The retraction of the alerts raised on ``record``'s block (none if there were
        none)."""
        found = self.by_block.pop(record.block_number, [])
        if not found:
            return []
        ids = [alert_id for alert_id, _ in found]
        at = max(t for _, t in found)
        self.raised += 1
        return [Alert.build(
            type="retraction", severity="info", score=1.0, subject=record.block_hash,
            detector=DETECTOR, model_version="1",
            evidence={"retracted": ids, "block_number": record.block_number,
                      "block_hash": record.block_hash, "reason": record.reason},
            source=source | {"item_ids": [record.item_id, *ids]}, event_time=at,
            detected_at=at, labels={"block_number": record.block_number})]

    def state(self) -> list[Any]:
        return [[block, [list(x) for x in found]] for block, found in self.by_block.items()]

    def load_state(self, state: list[Any]) -> None:
        self.by_block = {int(block): [(str(i), int(t)) for i, t in found]
                         for block, found in state}
