"""The scoring logic of one partition's worth of state, free of Kafka.

:class:`Scorer` takes validated records in order and returns the alerts they trigger. The
service (:mod:`consumers.scorer`) feeds it from Kafka; tests and the evaluator feed it
directly.
"""

from __future__ import annotations

from typing import Any

from river import stats

from pipeline.alerts import Alert
from pipeline.detectors import AlertFilter, PumpPhase, TransferAnomaly
from pipeline.features import AddressBook, PoolWindow, transaction_features
from pipeline.records import ChainRecord, DexEvent, Transaction

FRESH_WITHIN_BLOCKS = 3


class Scorer:
    """Per-partition state (features, models, filters) and the rules that raise alerts."""

    def __init__(self, seed: int = 42, anomaly_quantile: float = 0.999) -> None:
        self.book = AddressBook()
        self.pools: dict[str, PoolWindow] = {}
        self.pump = PumpPhase()
        self.pump_filter = AlertFilter(threshold=0.6, cooldown_blocks=50)
        self.anomaly = TransferAnomaly(seed=seed)
        self.anomaly_quantile = stats.Quantile(anomaly_quantile)
        self.anomaly_filter = AlertFilter(threshold=0.0, cooldown_blocks=100)
        self.events = 0

    def process(self, record: ChainRecord, source: dict[str, Any]) -> list[Alert]:
        self.events += 1
        if isinstance(record, DexEvent):
            return self._dex(record, source)
        if isinstance(record, Transaction):
            return self._transaction(record, source)
        return []  # token transfers and labels carry no detector yet

    def _dex(self, ev: DexEvent, source: dict[str, Any]) -> list[Alert]:
        fresh = False
        if ev.kind == "swap" and ev.to:
            first = self.book.observe(ev.to, ev.block_number)
            fresh = ev.block_number - first <= FRESH_WITHIN_BLOCKS
        window = self.pools.get(ev.pool_address)
        if window is None:
            window = self.pools[ev.pool_address] = PoolWindow()
        x = window.update(ev, fresh)
        score = self.pump.score_one(x)
        if not self.pump_filter.decide(ev.pool_address, score, ev.block_number):
            return []
        return [Alert.build(
            type="pump_and_dump", severity="high" if score > 0.9 else "medium", score=score,
            subject=ev.pool_address, addresses=(ev.token0, ev.token1), detector=self.pump.name,
            model_version=self.pump.version,
            evidence={k: round(v, 6) for k, v in x.items()} | {
                "threshold": self.pump_filter.threshold, "min_return_5": self.pump.min_return},
            source=source | {"item_ids": [ev.item_id]}, event_time=ev.block_timestamp,
            detected_at=ev.block_timestamp, labels={"block_number": ev.block_number},
        )]

    def _transaction(self, tx: Transaction, source: dict[str, Any]) -> list[Alert]:
        first = self.book.observe(tx.from_address, tx.block_number)
        x = transaction_features(tx, first)
        score = self.anomaly.score_one(x)
        self.anomaly_quantile.update(score)
        cutoff = self.anomaly_quantile.get() or 1.0
        if score <= cutoff or self.anomaly.seen < 2000:
            self.anomaly.learn_one(x)  # anomalies are not learned
            return []
        if not self.anomaly_filter.decide(tx.from_address, score, tx.block_number):
            return []
        return [Alert.build(
            type="anomalous_transfer", severity="low", score=score, subject=tx.from_address,
            addresses=tuple(a for a in (tx.from_address, tx.to_address) if a),
            detector=self.anomaly.name, model_version=self.anomaly.version,
            evidence={k: round(v, 6) for k, v in x.items()} | {"threshold": round(cutoff, 6)},
            source=source | {"item_ids": [tx.item_id]}, event_time=tx.block_timestamp,
            detected_at=tx.block_timestamp, labels={"block_number": tx.block_number},
        )]
