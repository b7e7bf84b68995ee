"""The Kafka sink of producers: records to their topic, keyed for state locality."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from kafka import KafkaProducer

from pipeline import clients, codec
from pipeline.metrics import RECORDS_PRODUCED
from pipeline.records import ChainRecord, DexEvent, Label, Trade
from pipeline.settings import Settings, Topics


def message_for(record: ChainRecord, topics: Topics) -> tuple[str, bytes, bytes]:
    """(topic, key, value) of a record: its topic by type, keyed for state locality."""
    if isinstance(record, DexEvent):
        topic = topics.dex
    elif isinstance(record, Trade):
        topic = topics.trades
    elif isinstance(record, Label):
        topic = topics.labels
    else:
        topic = topics.transactions
    return topic, record.key.encode(), codec.encode(record)


class KafkaSink:
    """open / write / flush / close; close flushes.

    Transactions and token transfers go to the transactions topic keyed by sender, DEX events
    to the DEX topic keyed by pool, trades to the trades topic keyed by stream (or venue and
    market), labels to the labels topic keyed by subject: everything
    about one key lands on one partition.
    """

    def __init__(self, settings: Settings, **producer_overrides: Any) -> None:
        self._settings = settings
        self._overrides = producer_overrides
        self._producer: KafkaProducer | None = None
        self._counters: dict[str, Any] = {}
        self.produced = 0

    def open(self) -> KafkaSink:
        if self._producer is None:
            self._producer = clients.producer(self._settings, **self._overrides)
        return self

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            raise RuntimeError("KafkaSink is not open; call open() or use it as a context")
        return self._producer

    def write(self, record: ChainRecord) -> None:
        topic, key, value = message_for(record, self._settings.topics)
        self.producer.send(topic, value=value, key=key)
        counter = self._counters.get(topic)
        if counter is None:
            counter = self._counters[topic] = RECORDS_PRODUCED.labels(topic=topic)
        counter.inc()
        self.produced += 1

    def flush(self) -> None:
        self.producer.flush()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush()
            self._producer.close()
            self._producer = None

    def __enter__(self) -> KafkaSink:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
