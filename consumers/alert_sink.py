"""The alert sink: every alert of ``chainwatch.alerts`` into the alert store, exactly once.

It reads every partition of the alerts topic (assigned directly, not through a consumer
group: the store, not Kafka, keeps its position), seeking each to the next offset the store
holds for it (the beginning when it holds none). Each polled batch goes into the store in
one transaction with the offsets it covers (:meth:`~pipeline.alert_store.AlertStore.add`),
so a sink killed at any moment, SIGKILL included, resumes where its last commit ended: an
alert is neither lost nor stored twice. A re-sent alert (same ``alert_id``) is counted as a
duplicate and not stored again; the first copy stays.

A message that is not an alert goes to the dead-letter topic with its reason and source
(stage ``alert_sink``), and its offset advances with the batch like any other. The dead
letter is sent before the batch commits: a crash in between may send it twice, never lose it.

Each new alert's context (the records of its subject around it on its source partition,
:mod:`pipeline.alert_context`: what the web view's chart draws) is read back from Kafka by a
background thread while Kafka still has them, and kept beside it (``alerts.context_records``
records before the alert; 0 turns it off). It never holds the sink back: at stop it gets
``context_drain_s`` to finish what is queued, and what it skips the web view reads later if
the broker still has it.

Health (:mod:`pipeline.health`): the loop beats on every turn; the sink is ready once every
partition is fetched and within ``ready_max_lag`` records of its end.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from prometheus_client import Counter, Histogram

from pipeline import clients
from pipeline.alert_context import ContextFetcher
from pipeline.alert_store import AlertStore, Incoming
from pipeline.dlq import DeadLetterWriter
from pipeline.errors import ConfigError, RecordError
from pipeline.lag import READY_MAX_LAG, ConsumerHealth
from pipeline.metrics import RECORDS_CONSUMED
from pipeline.settings import Settings

log = logging.getLogger(__name__)

ALERTS_STORED = Counter(
    "chainwatch_alert_store_alerts", "Alerts written to the alert store (new alert ids)")
ALERTS_DUPLICATE = Counter(
    "chainwatch_alert_store_duplicates", "Alerts the alert store already held (re-sent "
    "copies), not stored again")
BATCH_LATENCY = Histogram(
    "chainwatch_alert_store_batch_seconds", "Time to write one polled batch (alerts and "
    "offsets, one transaction) to the alert store",
    buckets=(1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5))


@dataclass
class SinkStats:
    consumed: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0


class AlertSinkService:
    """Consumes the alerts topic into the alert store at ``settings.alerts.store``."""

    def __init__(self, settings: Settings, stop: threading.Event | None = None, *,
                 poll_timeout_ms: int = 200, max_batch: int = 5_000,
                 ready_max_lag: int = READY_MAX_LAG, context_drain_s: float = 5.0) -> None:
        self.settings = settings
        self.context_drain_s = context_drain_s
        self.stop_event = stop or threading.Event()
        self.poll_timeout_ms = poll_timeout_ms
        self.max_batch = max_batch
        self.stats = SinkStats()
        self.health = ConsumerHealth(ready_max_lag)
        self._store: AlertStore | None = None

    def alive(self) -> tuple[bool, str]:
        """Whether the service loop is turning (``/healthz``); any thread may ask."""
        return self.health.alive()

    def ready(self) -> tuple[bool, str]:
        """Whether its partitions are assigned and read to the end (``/readyz``)."""
        return self.health.ready()

    def prepare(self) -> AlertStore:
        """The opened store (tables made if missing): a one-line error before any Kafka
        work if it cannot be used. Idempotent."""
        if self._store is None:
            self._store = AlertStore.open(self.settings.alerts.store)
        return self._store

    def run(self, input_finished: Callable[[], bool] | None = None) -> SinkStats:
        """Store until stopped, or until ``input_finished()`` and every partition is read."""
        store = self.prepare()
        producer = clients.producer(self.settings, linger_ms=5)
        try:
            consumer = clients.consumer(self.settings, max_poll_records=self.max_batch,
                                        enable_auto_commit=False)
        except BaseException:
            producer.close()
            store.close()
            raise
        dlq = DeadLetterWriter(producer, self.settings.topics.dlq, stage="alert_sink")
        before = self.settings.alerts.context_records
        contexts = ContextFetcher(self.settings, store, before) if before else None
        try:
            self._assign(consumer, store)
            self.health.set_ready(False, "reading its partitions")
            while not self.stop_event.is_set():
                batch = consumer.poll(timeout_ms=self.poll_timeout_ms)
                self.health.observe(consumer)
                if batch:
                    items = self._write(batch, store, dlq)
                    if contexts is not None:
                        contexts.offer(i.alert for i in items)
                elif input_finished is not None and input_finished() and \
                        clients.caught_up(consumer):
                    break
        finally:
            self.health.set_ready(False, "stopped")
            self.health.close()
            if contexts is not None:
                contexts.close(self.context_drain_s)
            consumer.close()
            producer.close()
            store.close()
            self._store = None
        return self.stats

    def _assign(self, consumer: KafkaConsumer, store: AlertStore) -> None:
        topic = self.settings.topics.alerts
        found = clients.partitions_for(consumer, topic)
        if not found:
            raise ConfigError(f"topic {topic} does not exist; create the topics with "
                              "`chainwatch topics`")
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        done = store.offsets()
        for tp in partitions:
            if (tp.topic, tp.partition) in done:
                consumer.seek(tp, done[(tp.topic, tp.partition)])
            else:
                consumer.seek_to_beginning(tp)
        log.info("alert sink: store %s holds %d alerts; reading %d partitions of %s from "
                 "where it ends", store.shown, store.count(), len(partitions), topic)

    def _write(self, batch: dict[TopicPartition, list[Any]], store: AlertStore,
               dlq: DeadLetterWriter) -> list[Incoming]:
        started = time.perf_counter()
        items: list[Incoming] = []
        offsets: dict[tuple[str, int], int] = {}
        for tp in sorted(batch, key=lambda tp: tp.partition):
            messages = batch[tp]
            RECORDS_CONSUMED.labels(topic=tp.topic).inc(len(messages))
            self.stats.consumed += len(messages)
            for msg in messages:
                value = msg.value or b""
                try:
                    items.append(Incoming.parse(value))
                except RecordError as exc:
                    dlq.write_error(value, exc, {"topic": tp.topic, "partition": tp.partition,
                                                 "offset": msg.offset})
            if messages:
                offsets[(tp.topic, tp.partition)] = messages[-1].offset + 1
        stored = store.add(items, offsets)
        BATCH_LATENCY.observe(time.perf_counter() - started)
        ALERTS_STORED.inc(stored)
        ALERTS_DUPLICATE.inc(len(items) - stored)
        self.stats.stored += stored
        self.stats.duplicates += len(items) - stored
        self.stats.dead_lettered = dlq.count
        self.stats.batches += 1
        return items
