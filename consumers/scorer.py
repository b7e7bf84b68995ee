"""The scorer service: a Kafka consumer-group member that scores every event it is assigned.

It subscribes to the transactions, DEX and labels topics with the range assignor, so each
member holds whole tasks (:mod:`consumers.tasks`): on assignment a task is restored from its
checkpoint, on revocation it is checkpointed and released. Scale out by starting more
members with the same group.

For every polled record:

1. decode and validate it; a bad record goes to the dead-letter topic with its reason and
   source offset, and processing goes on (so does a record whose scoring raised, as
   ``processing_error``: the first failure of each exception type is logged with its
   traceback, later ones in one line each). Writing a dead letter never raises
   (:mod:`pipeline.dlq`);
2. score it in its task's state, and send any alert to the alerts topic, keyed by subject.

Each task is checkpointed every ``checkpoint_every`` records or ``checkpoint_interval_s``
seconds after its first record since the last one (whether or not more come), on
revocation and on shutdown, in the order documented in :mod:`consumers.tasks`.

Before it reads anything, :meth:`ScorerService.prepare` loads (or makes) the checkpoint key,
sets up the audit check if asked for, and probes the checkpoint store, so a store that cannot
be used is one error at start-up, not one per partition later. A checkpoint of another run
(:class:`~consumers.tasks.CheckpointMismatch`) stops the service before it scores a record.

Health (:mod:`pipeline.health`): the loop beats on every turn and, at most once a second,
reads each partition's lag from the fetch high-water mark (:mod:`pipeline.lag`). The service
is ready once it holds partitions and each is within ``ready_max_lag`` records of its end.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.coordinator.assignors.range import RangePartitionAssignor

from consumers.tasks import Binding, Task, TaskManager
from consumers.transactions import TransactionalTaskManager, use_transactions
from pipeline import clients, codec
from pipeline.audit.trust import CheckpointTrust
from pipeline.checkpoints import CheckpointStore
from pipeline.dlq import DeadLetterWriter
from pipeline.errors import ConfigError, RecordError
from pipeline.lag import READY_MAX_LAG, ConsumerHealth, LagMonitor
from pipeline.metrics import (
    ALERTS,
    EVENT_TO_ALERT,
    FEATURE_EVICTIONS,
    FEATURE_KEYS,
    MODEL_DRIFTS,
    RECORDS_CONSUMED,
    RECORDS_PRODUCED,
    RULE_ERRORS,
    SCORING_LATENCY,
)
from pipeline.records import DexEvent, Label, Retraction, TokenTransfer, Trade, Transaction
from pipeline.rules import RuleSet
from pipeline.scoring import Scorer
from pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ScoreStats:
    consumed: int = 0
    scored: int = 0
    dead_lettered: int = 0
    alerts_by_type: Counter[str] = field(default_factory=Counter)


class ScorerService:
    """Consumes the chain topics in a consumer group and produces alerts."""

    def __init__(self, settings: Settings, stop: threading.Event | None = None, *,
                 poll_timeout_ms: int = 200, checkpoint_every: int = 50_000,
                 checkpoint_interval_s: float = 30.0,
                 scorer_factory: Callable[[], Scorer] | None = None,
                 trusted: Callable[[str], bool] | None = None,
                 ready_max_lag: int = READY_MAX_LAG,
                 **consumer_overrides: Any) -> None:
        self.settings = settings
        self.stop_event = stop or threading.Event()
        self.poll_timeout_ms = poll_timeout_ms
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        if scorer_factory is None:  # the settings' rules, imported and tried before any work
            scorer_factory = functools.partial(Scorer, rules=RuleSet.load(settings.detectors))
        self.scorer_factory = scorer_factory
        self.trusted = trusted
        self._consumer_overrides = consumer_overrides
        self.stats = ScoreStats()
        topics = settings.topics
        retraction = Retraction.record_type  # a live source's, on each topic it writes
        self._expected = {
            topics.transactions: frozenset({Transaction.record_type, TokenTransfer.record_type,
                                            retraction}),
            topics.dex: frozenset({DexEvent.record_type, retraction}),
            topics.trades: frozenset({Trade.record_type, retraction}),
            topics.labels: frozenset({Label.record_type}),
        }
        self.tasks: TaskManager | None = None
        # called after each record with (its Kafka timestamp in ms, alerts raised): benchmarks
        self.on_scored: Callable[[int, int], None] | None = None
        self._next_state_export = 0.0
        self.health = ConsumerHealth(ready_max_lag)
        self._failures_logged: set[str] = set()  # exception types logged with a traceback
        self._prepared: tuple[CheckpointStore, Callable[[str], bool] | None] | None = None
        # Kafka transactions (consumers/transactions.py): None until run() asks the broker
        self.transactional: bool | None = None

    def alive(self) -> tuple[bool, str]:
        """Whether the service loop is turning (``/healthz``); any thread may ask."""
        return self.health.alive()

    def ready(self) -> tuple[bool, str]:
        """Whether it holds partitions and is caught up (``/readyz``); any thread may ask."""
        return self.health.ready()

    def prepare(self) -> CheckpointStore:
        """The opened checkpoint store, after the key and the audit check: ChainwatchError
        (one line, saying what to do) if any of them cannot be used. Idempotent."""
        return self._prepare()[0]

    def _prepare(self) -> tuple[CheckpointStore, Callable[[str], bool] | None]:
        if self._prepared is None:
            trusted = self._trust()
            self._prepared = self.settings.checkpoint_store().open(), trusted
        return self._prepared

    def run(self, input_finished: Callable[[], bool] | None = None) -> ScoreStats:
        """Score until stopped, or until ``input_finished()`` and every partition is caught up."""
        store, trusted = self._prepare()
        if self.transactional is None:
            self.transactional = use_transactions(self.settings)
        log.info("scorer: %s", "exactly-once output through Kafka transactions"
                 if self.transactional else "idempotent output: re-sent alerts carry the "
                 "same ids and bytes, and the sinks de-duplicate them")
        producer = clients.producer(self.settings, linger_ms=5)
        try:
            consumer = clients.consumer(
                self.settings, **({"partition_assignment_strategy": [RangePartitionAssignor]}
                                  | self._consumer_overrides))
        except BaseException:
            producer.close()
            raise
        try:
            self._check_co_partitioned(consumer)
            manager = TransactionalTaskManager if self.transactional else TaskManager
            tasks = self.tasks = manager(self.settings, store, producer,
                                         scorer_factory=self.scorer_factory,
                                         trusted=trusted, binding=self._binding(consumer))
            dlq = DeadLetterWriter(producer, self.settings.topics.dlq, stage="scorer")
            consumer.subscribe(list(self._expected),
                               listener=_Rebalance(consumer, tasks, self.health.lag))
            self.health.set_ready(False, "joining the consumer group")
            while not self.stop_event.is_set():
                batch = consumer.poll(timeout_ms=self.poll_timeout_ms)
                opened = tasks.open_pending(consumer)  # with transactions: seeks them
                if tasks.failure is not None:  # raised here: the listener could not
                    raise tasks.failure
                self.health.observe(consumer)
                batch = {tp: msgs for tp, msgs in batch.items() if tp.partition not in opened}
                if batch:
                    self._score_batch(batch, producer, dlq, tasks)
                    if time.monotonic() >= self._next_state_export:
                        self._export_state(tasks)
                elif input_finished is not None and input_finished() and \
                        clients.caught_up(consumer):
                    break
                # also after an empty poll: the last records before a quiet spell are
                # committed and checkpointed in time, not at the next record
                tasks.commit_due(consumer)
                for task in list(tasks.tasks.values()):
                    if tasks.due(task, self.checkpoint_every, self.checkpoint_interval_s):
                        tasks.checkpoint(consumer, task)
            self.health.set_ready(False, "stopping")
            tasks.checkpoint_all(consumer)  # a clean stop leaves nothing to re-read
        finally:
            self.health.set_ready(False, "stopped")
            consumer.close()  # leaves the group; its revocation checkpoints need the producer
            if self.tasks is not None:
                self.tasks.close()
            producer.close()
            self.health.close()
        return self.stats

    def _trust(self) -> Callable[[str], bool] | None:
        """The check a checkpoint passes before it is restored, beyond its own digest."""
        if self.trusted is not None:
            return self.trusted
        if self.settings.audit.verify_checkpoints:
            return CheckpointTrust.from_settings(self.settings)
        return None

    def _binding(self, consumer: KafkaConsumer) -> Binding:
        """Group, input topics with their ids, cluster id: what checkpoints are bound to.

        kafka-python keeps the ids of its last metadata response (read by
        :meth:`_check_co_partitioned`) on ``consumer._client.cluster``; a broker or client
        that does not report one leaves it None.
        """
        cluster = getattr(getattr(consumer, "_client", None), "cluster", None)
        topic_id = getattr(cluster, "topic_id", None)
        cluster_id = getattr(cluster, "cluster_id", None)
        topics = {topic: str(found) if callable(topic_id) and (found := topic_id(topic))
                  else None for topic in self._expected}
        return Binding(self.settings.consumer_group, topics,
                       str(cluster_id) if cluster_id else None)

    def _export_state(self, tasks: TaskManager) -> None:
        """Drift, eviction and key counts of every task's Scorer, summed, as gauges."""
        totals: dict[str, float] = {}
        for task in tasks.tasks.values():
            for name, value in task.scorer.metrics().items():
                totals[name] = totals.get(name, 0.0) + value
        for name, value in totals.items():
            if name.startswith("drifts_"):
                MODEL_DRIFTS.labels(detector=name.removeprefix("drifts_")).set(value)
            elif name.startswith("rule_errors_"):
                RULE_ERRORS.labels(rule=name.removeprefix("rule_errors_")).set(value)
            elif name.startswith("evictions_"):
                FEATURE_EVICTIONS.labels(store=name.removeprefix("evictions_")).set(value)
            elif name.endswith("_tracked"):
                FEATURE_KEYS.labels(store=name.removesuffix("_tracked")).set(value)
        self._next_state_export = time.monotonic() + 5.0

    def _check_co_partitioned(self, consumer: KafkaConsumer) -> None:
        counts = {}
        for topic in self._expected:
            found = clients.partitions_for(consumer, topic)
            if not found:
                raise ConfigError(f"topic {topic} does not exist; create the topics with "
                                  "`chainwatch topics`")
            counts[topic] = len(found)
        if len(set(counts.values())) != 1:
            shown = ", ".join(f"{t} {n}" for t, n in counts.items())
            raise ConfigError(f"the scorer needs equal partition counts on its input topics, "
                              f"so that a key's records meet in one task; found {shown}")

    def _score_batch(self, batch: dict[TopicPartition, list[Any]], producer: KafkaProducer,
                     dlq: DeadLetterWriter, tasks: TaskManager) -> None:
        started = time.perf_counter()
        count = 0
        for tp, messages in batch.items():
            task = tasks.tasks.get(tp.partition)
            if task is None:  # revoked while this batch was in flight: its owner re-reads
                continue
            RECORDS_CONSUMED.labels(topic=tp.topic).inc(len(messages))
            count += len(messages)
            self._score_messages(task, tp, messages, producer, dlq)
        self.stats.consumed += count
        self.stats.dead_lettered = dlq.count
        self.stats.scored = self.stats.consumed - self.stats.dead_lettered
        if count:
            SCORING_LATENCY.observe((time.perf_counter() - started) / count)

    def _score_messages(self, task: Task, tp: TopicPartition, messages: list[Any],
                        producer: KafkaProducer, dlq: DeadLetterWriter) -> None:
        expected = self._expected[tp.topic]
        alerts_topic = self.settings.topics.alerts
        on_scored = self.on_scored
        output = self.tasks.producer_for(task) if self.tasks is not None else producer
        for msg in messages:
            source = {"topic": tp.topic, "partition": tp.partition, "offset": msg.offset}
            if task.replaying(tp.topic, msg.offset):  # its output is committed already
                with contextlib.suppress(Exception):  # and so is its dead letter
                    task.scorer.process(codec.decode(msg.value or b"", expected), source)
                task.advance(tp.topic, msg.offset)
                continue
            try:
                record = codec.decode(msg.value or b"", expected)
                alerts = task.scorer.process(record, source)
            except RecordError as exc:
                dlq.write_error(msg.value or b"", exc, source)
                alerts = []
            except Exception as exc:  # a bug must not stop the service: keep the record
                self._log_failure(exc, source)
                dlq.write(msg.value or b"", "processing_error", repr(exc), source)
                alerts = []
            task.advance(tp.topic, msg.offset)
            if on_scored is not None:
                on_scored(msg.timestamp, len(alerts))
            for alert in alerts:
                output.send(alerts_topic, value=alert.to_json(), key=alert.subject.encode())
                RECORDS_PRODUCED.labels(topic=alerts_topic).inc()
                ALERTS.labels(type=alert.type, severity=alert.severity).inc()
                EVENT_TO_ALERT.observe(max(time.time() - msg.timestamp / 1000, 0.0))
                self.stats.alerts_by_type[alert.type] += 1

    def _log_failure(self, exc: Exception, source: dict[str, Any]) -> None:
        """A record whose scoring raised: the first failure of each exception type is logged
        with its traceback, later ones in one line, so a bug that fails every record does not
        bury the log (each such record is dead-lettered all the same)."""
        kind = type(exc).__name__
        if kind in self._failures_logged:
            log.error("scoring failed at %s: %s: %s (traceback logged at its first failure)",
                      source, kind, exc)
            return
        self._failures_logged.add(kind)
        log.exception("scoring failed at %s", source)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: KafkaConsumer, tasks: TaskManager, lag: LagMonitor) -> None:
        self.consumer = consumer
        self.tasks = tasks
        self.lag = lag

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.lag.forget(revoked)
        self.tasks.release(self.consumer, {tp.partition for tp in revoked})

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.tasks.assign(self.consumer, {tp.partition for tp in assigned})
