"""Exactly-once output with Kafka transactions, on a broker that isolates them.

Each scorer task (:mod:`consumers.tasks`) writes through its own transactional producer,
whose id names the group and the task (``<group>.p0003``). Its alerts, the digests of its
checkpoints and the input offsets it has consumed go out in one transaction, committed every
``commit_interval_s`` (0.1 s) while records come, and at every checkpoint. A consumer reading
with ``isolation_level=read_committed`` (the auditor, the alert sink) sees each alert once, or
not at all while its transaction is open.

Opening a task, in the service loop (never in the rebalance listener, where kafka-python
cannot make a synchronous request):

1. ``init_transactions`` with the task's id: a predecessor's open transaction (a scorer
   that was killed, or that lost the partition) is aborted, and the predecessor is fenced:
   whatever it still tries to commit fails;
2. read the committed offsets K of the task's topic-partitions;
3. restore the newest good checkpoint that covers no record beyond K (a newer one was
   written inside a transaction that did not commit), at offsets C <= K, or start fresh;
4. seek to C and re-read up to K *without output*: those records' alerts were committed
   with K. The scorer's state after them is what it was, because alerts depend only on each
   topic-partition's own order (see :mod:`consumers.tasks`). From K on, output is normal.

So a checkpoint only bounds how much is re-read; which output is committed is decided by
the transaction alone. A commit that fails (the broker is away, the producer was fenced)
aborts the transaction and reopens the task from step 1 on the next turn: nothing of the
aborted transaction is visible, and its records are read again.

Dead letters go through the service's own producer, outside the transactions: a record
re-read after an aborted transaction is dead-lettered again (at least once), and none is
during the re-read of step 4.

Whether the broker isolates transactions is read from its API versions
(:func:`supports_transactions`): Tansu accepts the transactional requests but shows aborted
records to ``read_committed`` readers (tests/integration/test_broker_defects.py), so there
the idempotent path of :mod:`consumers.tasks` is used.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from consumers.tasks import RELEASE_SHARE, Task, TaskManager, max_poll_interval_ms, task_name
from pipeline import clients
from pipeline.checkpoints import CheckpointRef
from pipeline.errors import ChainwatchError, ConfigError
from pipeline.metrics import TRANSACTIONS
from pipeline.settings import Settings

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 0.1  # how long alerts may wait in an open transaction while records come
WRITE_TXN_MARKERS = 27  # the API key a broker that writes transaction markers answers
_CLOSE_TIMEOUT_S = 5.0


def supports_transactions(settings: Settings) -> bool:
    """Whether the broker isolates transactions: it serves WriteTxnMarkers, which Apache
    Kafka's brokers send each other to end a transaction and Tansu does not implement."""
    admin = clients.admin(settings)
    try:
        return any(int(key) == WRITE_TXN_MARKERS for key in admin.api_versions())
    finally:
        admin.close()


def use_transactions(settings: Settings) -> bool:
    """``settings.transactions`` resolved against the broker: ``auto`` is on where the broker
    isolates transactions, ``on`` raises ConfigError where it does not, ``off`` is off."""
    if settings.transactions == "off":
        return False
    supported = supports_transactions(settings)
    if settings.transactions == "on" and not supported:
        raise ConfigError(f"transactions = on, but the broker at {settings.bootstrap_servers} "
                          "does not isolate transactions (Tansu does not); use Apache Kafka, "
                          "or set transactions to auto or off")
    return supported


def transactional_id(group: str, task: str) -> str:
    """One id per group and task: a task's successor fences its predecessor with it."""
    return f"{group}.{task}"


class TransactionalTaskManager(TaskManager):
    """A :class:`TaskManager` whose tasks write through their own transactional producers."""

    def __init__(self, *args: object, commit_interval_s: float = COMMIT_INTERVAL_S,
                 producer_factory: Callable[[str], KafkaProducer] | None = None,
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.commit_interval_s = commit_interval_s
        self._producer_factory = producer_factory or self._transactional_producer
        self.pending: set[int] = set()  # assigned partitions whose tasks are not open yet

    def _transactional_producer(self, transactional_id: str) -> KafkaProducer:
        return clients.producer(self.settings, linger_ms=5, transactional_id=transactional_id)

    def producer_for(self, task: Task) -> KafkaProducer:
        if task.producer is None:  # an open task always has one
            raise ChainwatchError(f"task {task.name} has no transactional producer")
        return task.producer

    # -- opening and releasing ------------------------------------------------------------------

    def assign(self, consumer: KafkaConsumer, partitions: set[int]) -> None:
        """From the listener: note the partitions; :meth:`open_pending` opens them."""
        self.pending |= partitions - set(self.tasks)

    def open_pending(self, consumer: KafkaConsumer) -> set[int]:
        """Open the noted tasks (steps 1-4 of the module docstring); the partitions opened,
        whose records in the current poll the caller drops (their positions moved)."""
        opened: set[int] = set()
        assigned = consumer.assignment()
        for partition in sorted(self.pending):
            if self.failure is not None:
                break
            self.pending.discard(partition)
            tps = [tp for topic in self.topics
                   if (tp := TopicPartition(topic, partition)) in assigned]
            if not tps:
                continue
            try:
                task = self._open(consumer, partition, tps)
            except ChainwatchError as exc:
                self.failure = exc
                break
            except KafkaError as exc:  # the broker is away: try again on the next turn
                log.warning("task %s: opening failed (%s); trying again", task_name(partition),
                            exc)
                self.pending.add(partition)
                continue
            self.tasks[partition] = task
            opened.add(partition)
        return opened

    def _open(self, consumer: KafkaConsumer, partition: int,
              tps: list[TopicPartition]) -> Task:
        name = task_name(partition)
        producer = self._producer_factory(transactional_id(self.group, name))
        try:
            producer.init_transactions()  # 1. the predecessor's transaction is aborted
            committed = {}  # 2.
            for tp in tps:
                offset = consumer.committed(tp)
                if offset is not None:
                    committed[tp.topic] = int(offset)
            task = self._restore(partition, committed)  # 3.
            for tp in tps:  # 4.
                if tp.topic in task.offsets:
                    consumer.seek(tp, task.offsets[tp.topic])
                else:
                    consumer.seek_to_beginning(tp)
            producer.begin_transaction()
        except BaseException:
            producer.close(timeout=0)
            raise
        task.producer = producer
        task.replay_until = {topic: offset for topic, offset in committed.items()
                             if offset > task.offsets.get(topic, 0)}
        task.txn_records, task.txn_started = 0, time.monotonic()
        replay = sum(offset - task.offsets.get(topic, 0)
                     for topic, offset in task.replay_until.items())
        log.info("task %s opened %s%s", name,
                 f"from checkpoint {task.restored_from.seq}" if task.restored_from
                 else "with fresh state",
                 f", re-reading {replay} committed records without output" if replay else "")
        return task

    def release(self, consumer: KafkaConsumer, partitions: set[int]) -> None:
        """Checkpoint (or at least commit) and close the revoked tasks; never raises."""
        self.pending -= partitions
        deadline = time.monotonic() + RELEASE_SHARE * max_poll_interval_ms(consumer) / 1000
        for partition in sorted(partitions & set(self.tasks)):
            task = self.tasks.pop(partition)
            try:
                if time.monotonic() < deadline:
                    self.checkpoint(consumer, task, deadline=deadline)
                else:
                    self._commit(task)
            except (ChainwatchError, KafkaError) as exc:
                log.warning("task %s released, its last transaction not committed (%s); its "
                            "successor aborts it and re-reads", task.name,
                            " ".join(str(exc).split()) or type(exc).__name__)
            self._close(task)

    def close(self) -> None:
        """Close every task's producer (after :meth:`checkpoint_all` on a clean stop)."""
        for task in self.tasks.values():
            self._close(task)

    def _close(self, task: Task) -> None:
        if task.producer is not None:
            with contextlib.suppress(Exception):  # closing a failed producer may raise too
                task.producer.close(timeout=_CLOSE_TIMEOUT_S)
            task.producer = None

    # -- committing ----------------------------------------------------------------------------

    def commit_due(self, consumer: KafkaConsumer, interval_s: float | None = None) -> None:
        """Commit every task whose open transaction holds records and is ``interval_s`` old."""
        interval = self.commit_interval_s if interval_s is None else interval_s
        now = time.monotonic()
        for task in list(self.tasks.values()):
            if task.txn_records and now - task.txn_started >= interval:
                self._commit_or_reopen(task)

    def checkpoint(self, consumer: KafkaConsumer, task: Task, commit: bool = True,
                   deadline: float | None = None) -> CheckpointRef | None:
        """Write the state, then commit it with the alerts and offsets in one transaction;
        the checkpoint the task now stands on."""
        if task.uncheckpointed == 0:
            if task.txn_records:
                self._commit_or_reopen(task)
            return task.restored_from
        ref, size = self._write(task, deadline)
        if not self._commit_or_reopen(task):
            return None  # written, never committed: a restore skips it
        self._written(task, ref, size)
        return ref

    def _commit_or_reopen(self, task: Task) -> bool:
        """Commit the task's transaction; on failure abort it, close the task and note it
        for reopening (its records are read again). Whether it committed."""
        try:
            self._commit(task)
        except KafkaError as exc:
            TRANSACTIONS.labels(outcome="aborted").inc()
            log.warning("task %s: committing its transaction failed (%s); aborting it and "
                        "reopening the task from its committed offsets", task.name,
                        " ".join(str(exc).split()) or type(exc).__name__)
            if task.producer is not None:
                with contextlib.suppress(Exception):
                    task.producer.abort_transaction()
            self._close(task)
            if self.tasks.get(task.partition) is task:
                del self.tasks[task.partition]
                self.pending.add(task.partition)
            return False
        return True

    def _commit(self, task: Task) -> None:
        producer = self.producer_for(task)
        offsets = {TopicPartition(topic, task.partition): OffsetAndMetadata(offset, "", -1)
                   for topic, offset in task.offsets.items()}
        if offsets:
            producer.send_offsets_to_transaction(offsets, self.group)
        producer.commit_transaction()
        TRANSACTIONS.labels(outcome="committed").inc()
        producer.begin_transaction()
        task.txn_records, task.txn_started = 0, time.monotonic()
