"""The auditor: the single sequencer that appends alerts and checkpoints to the audit log.

It reads every partition of ``chainwatch.alerts`` and ``chainwatch.checkpoints`` (assigned
directly, not through a consumer group: there is one auditor, and a file lock on the log
makes sure of it), turns each record into a :class:`~pipeline.audit.Leaf`, and appends each
polled batch to the log in one SQLite transaction together with the input offsets the batch
covers. Each batch that adds leaves yields a signed head, published to ``chainwatch.audit``.

Exactly once, across crashes: the offsets live in the same transaction as the leaves, and
the auditor seeks to them on start, so a batch is either wholly in the log with its offsets
or not at all and read again. A re-sent alert (a scorer that restarted from a checkpoint)
has the same id and is appended once. The newest head is published again on start, in case
the process died between the commit and the send.

A record that is not an alert or a checkpoint record goes to the dead-letter topic with its
reason; so does a re-sent record whose bytes differ from the logged one under the same id
(a *conflict*: the log keeps the first, and a person should look). "First" does not depend
on the order in which a poll happens to list its partitions: a batch is appended in the
order its records were produced (their timestamps; ties in topic, partition and offset
order, and each partition in offset order), so of two copies of one id in one batch the
one produced first is logged, whichever partition it came from.

Sealing: when a poll finds nothing new, the file changed since it was last sealed and the
last seal is ``seal_interval_s`` (10 s) old, the auditor seals the file (which reads all of
it, see :mod:`pipeline.audit.seal`); it seals once more on stop. Each seal yields a *seal
head*, published to ``chainwatch.audit`` like the others, so that removing the seal from the
file is caught (:mod:`pipeline.audit.external`).

Health (:mod:`pipeline.health`): the loop beats on every turn and reads the lag of its
partitions from the fetch high-water mark at most once a second; the auditor is ready once
every partition is fetched and within ``ready_max_lag`` records of its end.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from pipeline import clients
from pipeline.audit import AuditError, AuditLog, Leaf, LeafError, SignedHead
from pipeline.dlq import DeadLetterWriter
from pipeline.errors import ConfigError
from pipeline.lag import READY_MAX_LAG, ConsumerHealth
from pipeline.metrics import (
    AUDIT_APPEND,
    AUDIT_HEAD_TIMESTAMP,
    AUDIT_LOG_SIZE,
    RECORDS_CONSUMED,
    RECORDS_PRODUCED,
)
from pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class AuditStats:
    consumed: int = 0
    appended: int = 0
    duplicates: int = 0
    conflicts: int = 0
    dead_lettered: int = 0
    heads_published: int = 0
    seals: int = 0
    tree_size: int = 0
    root: str = ""


class AuditorService:
    """Consumes alerts and checkpoint records into the audit log and publishes its heads."""

    def __init__(self, settings: Settings, stop: threading.Event | None = None, *,
                 poll_timeout_ms: int = 200, max_batch: int = 20_000,
                 ready_max_lag: int = READY_MAX_LAG, seal_interval_s: float = 10.0) -> None:
        self.settings = settings
        self.seal_interval_s = seal_interval_s
        self._last_seal = time.monotonic()
        self.stop_event = stop or threading.Event()
        self.poll_timeout_ms = poll_timeout_ms
        self.max_batch = max_batch
        self.store = Path(settings.audit.store)
        self.key = Path(settings.audit.key) if settings.audit.key else None
        self.stats = AuditStats()
        self._parsers: dict[str, Callable[[bytes], Leaf]] = {
            settings.topics.alerts: Leaf.from_alert_json,
            settings.topics.checkpoints: Leaf.from_checkpoint_json,
        }
        self.health = ConsumerHealth(ready_max_lag)

    def alive(self) -> tuple[bool, str]:
        """Whether the service loop is turning (``/healthz``); any thread may ask."""
        return self.health.alive()

    def ready(self) -> tuple[bool, str]:
        """Whether its partitions are assigned and read to the end (``/readyz``)."""
        return self.health.ready()

    def run(self, input_finished: Callable[[], bool] | None = None) -> AuditStats:
        """Append until stopped, or until ``input_finished()`` and every partition is read."""
        self.store.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.store), AuditLog.open(self.store, self.key) as audit:
            producer = clients.producer(self.settings, linger_ms=5)
            consumer = clients.consumer(self.settings, max_poll_records=self.max_batch,
                                        enable_auto_commit=False)
            dlq = DeadLetterWriter(producer, self.settings.topics.dlq, stage="auditor")
            try:
                self._assign(consumer, audit)
                if audit.head is not None:  # the last run may have died before sending it
                    self._publish(producer, audit.head)
                self._export(audit)
                self.health.set_ready(False, "reading its partitions")
                while not self.stop_event.is_set():
                    batch = consumer.poll(timeout_ms=self.poll_timeout_ms)
                    self.health.observe(consumer)
                    if batch:
                        self._append(batch, audit, producer, dlq)
                        continue
                    if time.monotonic() - self._last_seal >= self.seal_interval_s:
                        self._seal(audit, producer)
                    if input_finished is not None and input_finished() and \
                            clients.caught_up(consumer):
                        break
                self._seal(audit, producer)  # before the producer closes: its head goes out
            finally:
                self.health.close()
                consumer.close()
                producer.close()
            self.stats.tree_size = audit.size
            self.stats.root = audit.head.root.hex() if audit.head else ""
        return self.stats

    def _assign(self, consumer: KafkaConsumer, audit: AuditLog) -> None:
        """Every partition of the input topics, each at the offset the log says is next."""
        done = audit.offsets()
        partitions = []
        for topic in self._parsers:
            found = clients.partitions_for(consumer, topic)
            if not found:
                raise ConfigError(f"topic {topic} does not exist; create the topics with "
                                  "`chainwatch topics`")
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        for tp in partitions:
            if (tp.topic, tp.partition) in done:
                consumer.seek(tp, done[(tp.topic, tp.partition)])
            else:
                consumer.seek_to_beginning(tp)
        log.info("auditor: log %s has %d leaves; reading %d partitions from where it ends",
                 self.store, audit.size, len(partitions))

    def _append(self, batch: dict[TopicPartition, list[Any]], audit: AuditLog,
                producer: KafkaProducer, dlq: DeadLetterWriter) -> None:
        firsts: dict[str, tuple[bytes, bytes, dict[str, Any]]] = {}  # id -> hash, raw, source
        conflicts: list[tuple[str, bytes, dict[str, Any]]] = []
        duplicates = 0
        for tp, messages in batch.items():
            RECORDS_CONSUMED.labels(topic=tp.topic).inc(len(messages))
            self.stats.consumed += len(messages)
        for msg in _produced_order(batch):
            value = msg.value or b""
            source = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
            try:
                leaf: Leaf | None = self._parsers[msg.topic](value)
            except LeafError as exc:
                dlq.write_error(value, exc, source)
                leaf = None
            if leaf is not None and leaf.id in firsts:  # an earlier copy in this batch wins
                duplicates += 1
                if firsts[leaf.id][0] != leaf.hash:
                    conflicts.append((leaf.id, value, source))
                leaf = None
            elif leaf is not None:
                firsts[leaf.id] = (leaf.hash, value, source)
            audit.write(leaf, (msg.topic, msg.partition, msg.offset + 1))
        started = time.perf_counter()
        result = audit.flush()
        if result is None:
            return
        AUDIT_APPEND.observe(time.perf_counter() - started)
        self.stats.appended += result.appended
        self.stats.duplicates += len(result.duplicates) + duplicates
        conflicts[:0] = [(i, firsts[i][1], firsts[i][2]) for i in result.conflicts]
        for leaf_id, value, source in conflicts:
            log.warning("auditor: %s was logged before with other bytes; the log keeps the "
                        "first, this one goes to the dead-letter topic", leaf_id)
            dlq.write(value, "audit_conflict", f"{leaf_id} is in the audit log with "
                      "other bytes", source)
        self.stats.conflicts += len(conflicts)
        self.stats.dead_lettered = dlq.count
        if result.head is not None:
            self._publish(producer, result.head)
        self._export(audit)

    def _seal(self, audit: AuditLog, producer: KafkaProducer) -> None:
        """Seal the file if it changed since its last seal, and publish the seal head."""
        self._last_seal = time.monotonic()
        if audit.needs_seal and audit.seal() is not None and audit.seal_head is not None:
            self._publish(producer, audit.seal_head)
            self.stats.seals += 1
            log.info("auditor: sealed %s at %d leaves", self.store, audit.size)

    def _publish(self, producer: KafkaProducer, head: SignedHead) -> None:
        topic = self.settings.topics.audit
        producer.send(topic, value=head.to_json(), key=b"head")
        producer.flush()
        RECORDS_PRODUCED.labels(topic=topic).inc()
        self.stats.heads_published += 1

    @staticmethod
    def _export(audit: AuditLog) -> None:
        AUDIT_LOG_SIZE.set(audit.size)
        if audit.head is not None:
            AUDIT_HEAD_TIMESTAMP.set(audit.head.timestamp_ms / 1000)


def _produced_order(batch: dict[TopicPartition, list[Any]]) -> Iterator[Any]:
    """The records of a polled batch by produce timestamp, then topic, partition and offset,
    each partition kept in offset order: one order, however the poll listed them."""
    runs = [batch[tp] for tp in sorted(batch, key=lambda tp: (tp.topic, tp.partition))]
    return heapq.merge(*runs, key=lambda m: (m.timestamp, m.topic, m.partition, m.offset))


@contextlib.contextmanager
def _exclusive(store: Path) -> Iterator[None]:
    """An advisory lock on ``<store>.lock``: one auditor per log, or a clear error."""
    fd = os.open(store.with_name(store.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AuditError(f"another auditor is appending to {store}; the log has one "
                             "writer (stop the other one first)") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock
