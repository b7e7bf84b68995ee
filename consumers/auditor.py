"""The auditor: the single sequencer that appends alerts and checkpoints to the audit log.

It reads every partition of ``chainwatch.alerts`` and ``chainwatch.checkpoints`` (assigned
directly, not through a consumer group), turns each record into a :class:`~pipeline.audit.
Leaf`, and appends each polled batch to the log in one SQLite transaction together with the
input offsets the batch covers. Each batch that adds leaves yields a signed head, published
to ``chainwatch.audit``.

One writer, any number of standbys. Auditors started on one log (one ``audit.store``, on a
shared volume) are candidates for one lease (:mod:`pipeline.lease`: a consumer group whose
single-partition topic is the audit topic): only the one the group assigns it appends; the
others stand by (``/readyz`` says ``standby``, ``chainwatch_audit_active`` is 0) and serve
the HTTP API from the file. The holder that dies (SIGKILL, a lost host) loses the lease after
the session timeout and a standby takes over: it opens the log, resumes from the offsets in
it and publishes its newest head again. The lease holds across hosts because Kafka holds
it; on one host the file lock on ``<store>.lock`` guards too: a new holder waits for it.
Without a lease (``lease=None``: the demo, tests in one process) the file lock alone
decides, and a second auditor waits for it.

A holder that was paused (SIGSTOP, a stalled VM) for longer than the session does not know
at once that a standby took over. So every commit asks the group coordinator first, holding
SQLite's write lock (:meth:`pipeline.lease.Lease.exclusive`, the log's ``fence``): a member
out of the current generation is refused, the batch is rolled back
(:class:`~pipeline.audit.errors.WriterFenced`), and the auditor closes the log without
sealing and stands by. Each commit also checks that no other process wrote to the file since
this one opened it (:class:`~pipeline.audit.errors.LogChanged`); then it opens the log
again and resumes from the offsets there. Either way nothing is appended twice or skipped.

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
one produced first is logged, whichever partition it came from. (A batch rolled back by the
fence has sent its dead letters already; the next writer sends them again.)

Sealing: when a poll finds nothing new, the file changed since it was last sealed and the
last seal is ``seal_interval_s`` (10 s) old, the auditor seals the file (which reads all of
it, see :mod:`pipeline.audit.seal`); it seals once more on stop. Each seal yields a *seal
head*, published to ``chainwatch.audit`` like the others, so that removing the seal from the
file is caught (:mod:`pipeline.audit.external`). Only a confirmed holder seals.

Health (:mod:`pipeline.health`): the loop beats on every turn and reads the lag of its
partitions from the fetch high-water mark at most once a second; the active auditor is
ready once every partition is fetched and within ``ready_max_lag`` records of its end; a
standby is not ready (``standby: …``).
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from pipeline import clients
from pipeline.audit import AuditError, AuditLog, AuditReader, Leaf, LeafError, SignedHead
from pipeline.audit.errors import LogChanged, WriterFenced
from pipeline.audit.store import unfenced
from pipeline.dlq import DeadLetterWriter
from pipeline.errors import ConfigError
from pipeline.lag import READY_MAX_LAG, ConsumerHealth
from pipeline.lease import Lease, LeaseConfig
from pipeline.metrics import (
    AUDIT_ACTIVE,
    AUDIT_APPEND,
    AUDIT_HEAD_TIMESTAMP,
    AUDIT_LOG_SIZE,
    RECORDS_CONSUMED,
    RECORDS_PRODUCED,
)
from pipeline.settings import Settings

log = logging.getLogger(__name__)

WAIT_S = 0.2  # how often a standby looks again at its lease and the file lock


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
    terms: int = 0
    """How many times this auditor became the writer."""


class AuditorService:
    """Consumes alerts and checkpoint records into the audit log and publishes its heads.

    ``lease``: the Kafka lease auditors of one log compete for (None: the file lock alone).
    ``on_role(role, message)`` hears each change of role: ``standby``, ``waiting`` (for the
    file lock), ``active``, ``stopped``.
    """

    def __init__(self, settings: Settings, stop: threading.Event | None = None, *,
                 poll_timeout_ms: int = 200, max_batch: int = 20_000,
                 ready_max_lag: int = READY_MAX_LAG, seal_interval_s: float = 10.0,
                 lease: LeaseConfig | None = None,
                 on_role: Callable[[str, str], None] | None = None) -> None:
        self.settings = settings
        self.seal_interval_s = seal_interval_s
        self._last_seal = time.monotonic()
        self.stop_event = stop or threading.Event()
        self.poll_timeout_ms = poll_timeout_ms
        self.max_batch = max_batch
        self.store = Path(settings.audit.store)
        self.key = Path(settings.audit.key) if settings.audit.key else None
        self.lease_config = lease
        self.role = "starting"
        self._on_role = on_role
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
        """Whether it is the writer, with its partitions assigned and read to the end
        (``/readyz``); any thread may ask."""
        ready, reason = self.health.ready()
        if ready and self.lease_config is not None:
            reason += f"; active, holding the lease of group {self.lease_config.group}"
        return ready, reason

    def run(self, input_finished: Callable[[], bool] | None = None) -> AuditStats:
        """Append while this auditor is the writer, stand by while another is, until
        stopped, or until ``input_finished()`` and every partition is read."""
        self.store.parent.mkdir(parents=True, exist_ok=True)
        AUDIT_ACTIVE.set(0)
        producer = clients.producer(self.settings, linger_ms=5)
        lease: Lease | None = None
        try:
            if self.lease_config is not None:
                lease = Lease(self.settings, self.lease_config).start()
            while not self.stop_event.is_set():
                if lease is not None and not self._await_lease(lease):
                    continue
                with _exclusive(self.store, lambda: self._may_wait_for_lock(lease)) as locked:
                    if locked and self._term(producer, lease, input_finished):
                        break
                self.stop_event.wait(WAIT_S)  # not the writer now: look again in a moment
        finally:
            self._set_role("stopped", "auditor: stopped")
            self.health.close()
            if lease is not None:
                lease.close()  # the lease moves to a standby at once
            producer.close()
        if not self.stats.terms:
            self._read_size()
        return self.stats

    # -- roles -----------------------------------------------------------------------------

    def _await_lease(self, lease: Lease) -> bool:
        """Stand by until ``lease`` is held (True) or the service stops (False)."""
        group = lease.config.group
        while not lease.held and not self.stop_event.is_set():
            if lease.failure is not None:
                raise lease.failure
            if lease.joined:
                self._set_role("standby", f"auditor: standing by: another auditor holds the "
                               f"lease of group {group} on {self.store}; this one takes over "
                               "when it stops")
                self.health.set_ready(False, f"standby: another auditor holds the lease of "
                                      f"group {group}")
            else:
                self.health.set_ready(False, f"joining the lease group {group}")
            self.health.beat()
            lease.wait(True, WAIT_S)
        return lease.held and not self.stop_event.is_set()

    def _may_wait_for_lock(self, lease: Lease | None) -> bool:
        """While the file lock is taken: whether to go on waiting for it."""
        self.health.beat()
        lock = self.store.with_name(self.store.name + ".lock")
        self._set_role("waiting", f"auditor: waiting for the file lock {lock}: another "
                       "auditor on this host appends to the log")
        self.health.set_ready(False, f"standby: waiting for the file lock {lock}")
        return not self.stop_event.is_set() and (lease is None or lease.held)

    def _set_role(self, role: str, message: str) -> None:
        if role == self.role:
            return
        self.role = role
        AUDIT_ACTIVE.set(1 if role == "active" else 0)
        log.info("%s", message)
        if self._on_role is not None:
            self._on_role(role, message)

    # -- one term as the writer ------------------------------------------------------------

    def _term(self, producer: KafkaProducer, lease: Lease | None,
              input_finished: Callable[[], bool] | None) -> bool:
        """Append as the writer until stopped or done (True), or until this auditor must
        not append any more: the lease lost, the log changed by another (False)."""
        fence = lease.exclusive if lease is not None else unfenced
        try:
            audit = AuditLog.open(self.store, self.key, fence=fence)
        except AuditError as exc:
            if not _busy(exc):
                raise
            log.warning("auditor: %s; trying again", exc)  # a paused writer holds SQLite's lock
            time.sleep(WAIT_S)
            return False
        consumer: KafkaConsumer | None = None
        try:
            consumer = clients.consumer(self.settings, max_poll_records=self.max_batch,
                                        enable_auto_commit=False)
            dlq = DeadLetterWriter(producer, self.settings.topics.dlq, stage="auditor")
            self._assign(consumer, audit)
            self.stats.terms += 1
            if audit.head is not None:  # the last writer may have died before sending it
                self._publish(producer, audit.head)
            self._export(audit)
            self.health.set_ready(False, "reading its partitions")
            self._set_role("active", f"auditor: active: appending to {self.store} from "
                           f"{audit.size:,} leaves")
            while not self.stop_event.is_set():
                if lease is not None and not lease.held:
                    log.warning("auditor: lost the lease of group %s: appending stopped",
                                lease.config.group)
                    return False
                batch = consumer.poll(timeout_ms=self.poll_timeout_ms)
                self.health.observe(consumer)
                if batch:
                    self._append(batch, audit, producer, dlq)
                    continue
                if time.monotonic() - self._last_seal >= self.seal_interval_s:
                    self._seal(audit, producer, lease)
                if input_finished is not None and input_finished() and \
                        clients.caught_up(consumer):
                    break
            self._seal(audit, producer, lease)  # before the producer closes: its head goes out
            return True
        except (WriterFenced, LogChanged) as exc:
            log.warning("auditor: %s", exc)
            return False
        finally:
            self.role = "between terms"  # the next term announces itself again
            AUDIT_ACTIVE.set(0)
            self.health.lag.close()
            if consumer is not None:
                consumer.close()
            self.stats.tree_size = audit.size
            self.stats.root = audit.head.root.hex() if audit.head else ""
            audit.discard()  # every batch was flushed, and sealing is fenced in _seal

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
        consumed = 0
        for tp, messages in batch.items():
            RECORDS_CONSUMED.labels(topic=tp.topic).inc(len(messages))
            consumed += len(messages)
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
        result = audit.flush()  # WriterFenced, LogChanged: nothing appended, nothing counted
        self.stats.consumed += consumed
        self.stats.dead_lettered = dlq.count
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

    def _seal(self, audit: AuditLog, producer: KafkaProducer, lease: Lease | None) -> None:
        """Seal the file if it changed since its last seal (and this auditor still holds the
        lease), and publish the seal head."""
        self._last_seal = time.monotonic()
        if not audit.needs_seal or (lease is not None and not lease.confirm()):
            return
        if audit.seal() is not None and audit.seal_head is not None:
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

    def _read_size(self) -> None:
        """The log's size and root for the summary of an auditor that never appended."""
        try:
            with AuditReader.open(self.store) as reader:
                head = reader.head
        except AuditError:
            return
        self.stats.tree_size = head.size if head else 0
        self.stats.root = head.root.hex() if head else ""


def _produced_order(batch: dict[TopicPartition, list[Any]]) -> Iterator[Any]:
    """The records of a polled batch by produce timestamp, then topic, partition and offset,
    each partition kept in offset order: one order, however the poll listed them."""
    runs = [batch[tp] for tp in sorted(batch, key=lambda tp: (tp.topic, tp.partition))]
    return heapq.merge(*runs, key=lambda m: (m.timestamp, m.topic, m.partition, m.offset))


def _busy(exc: AuditError) -> bool:
    """Whether ``exc`` is SQLite's "the database is locked" (another writer is in a
    transaction), rather than a damaged or foreign file."""
    cause = exc.__cause__
    return isinstance(cause, sqlite3.OperationalError) and "locked" in str(cause)


@contextlib.contextmanager
def _exclusive(store: Path, waiting: Callable[[], bool]) -> Iterator[bool]:
    """An advisory lock on ``<store>.lock`` (one writer per log on a host), waited for while
    ``waiting()`` says so: yields whether it was taken. Released when the block ends (and by
    the kernel when the process dies)."""
    fd = os.open(store.with_name(store.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        taken = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                taken = True
                break
            except BlockingIOError:
                if not waiting():
                    break
                time.sleep(WAIT_S)
        yield taken
    finally:
        os.close(fd)  # closing releases the lock
