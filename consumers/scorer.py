"""The scorer service: a Kafka consumer-group member that scores every event it is assigned.

State is kept per input partition (one :class:`~consumers.scoring.Scorer` each), because keys
decide locality: all events of one pool, or of one sender, land on one partition.

Each poll returns a batch; for every record in it:

1. decode and validate it; a bad record goes to the dead-letter topic with its reason and
   offset, and processing goes on;
2. score it, and send any alert to the alerts topic, keyed by subject;

then, after the batch, flush the producer and only then commit the consumed offsets, so an
alert is never lost behind a committed offset (a crash re-sends it; its deterministic id and
bytes make the duplicate harmless).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.scoring import Scorer
from pipeline import clients, codec
from pipeline.dlq import DeadLetterWriter
from pipeline.errors import RecordError
from pipeline.metrics import ALERTS, RECORDS_CONSUMED, RECORDS_PRODUCED, SCORING_LATENCY
from pipeline.records import DexEvent, TokenTransfer, Transaction
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

    def __init__(self, settings: Settings, stop: threading.Event | None = None,
                 poll_timeout_ms: int = 200, **consumer_overrides: Any) -> None:
        self.settings = settings
        self.stop_event = stop or threading.Event()
        self.poll_timeout_ms = poll_timeout_ms
        self._consumer_overrides = consumer_overrides
        self.stats = ScoreStats()
        self._states: dict[TopicPartition, Scorer] = {}
        topics = settings.topics
        self._expected = {
            topics.transactions: frozenset({Transaction.record_type, TokenTransfer.record_type}),
            topics.dex: frozenset({DexEvent.record_type}),
        }

    def run(self, input_finished: Callable[[], bool] | None = None) -> ScoreStats:
        """Score until stopped, or until ``input_finished()`` and every partition is caught up."""
        consumer = clients.consumer(self.settings, *self._expected,
                                    **self._consumer_overrides)
        producer = clients.producer(self.settings, linger_ms=5)
        dlq = DeadLetterWriter(producer, self.settings.topics.dlq, stage="scorer")
        try:
            while not self.stop_event.is_set():
                batch = consumer.poll(timeout_ms=self.poll_timeout_ms)
                if batch:
                    self._score_batch(batch, producer, dlq)
                    producer.flush()
                    consumer.commit()
                elif input_finished is not None and input_finished() and \
                        self._caught_up(consumer):
                    break
        finally:
            producer.close()
            consumer.close()
        return self.stats

    def _score_batch(self, batch: dict[TopicPartition, list[Any]], producer: KafkaProducer,
                     dlq: DeadLetterWriter) -> None:
        started = time.perf_counter()
        count = 0
        alerts_topic = self.settings.topics.alerts
        for tp, messages in batch.items():
            scorer = self._states.get(tp)
            if scorer is None:
                scorer = self._states[tp] = Scorer()
            expected = self._expected[tp.topic]
            RECORDS_CONSUMED.labels(topic=tp.topic).inc(len(messages))
            for msg in messages:
                count += 1
                source = {"topic": tp.topic, "partition": tp.partition, "offset": msg.offset}
                try:
                    record = codec.decode(msg.value, expected)
                    alerts = scorer.process(record, source)
                except RecordError as exc:
                    dlq.write_error(msg.value or b"", exc, source)
                    continue
                except Exception as exc:  # a bug must not stop the service: keep the record
                    log.exception("scoring failed at %s", source)
                    dlq.write(msg.value or b"", "processing_error", repr(exc), source)
                    continue
                for alert in alerts:
                    producer.send(alerts_topic, value=alert.to_json(),
                                  key=alert.subject.encode())
                    RECORDS_PRODUCED.labels(topic=alerts_topic).inc()
                    ALERTS.labels(type=alert.type, severity=alert.severity).inc()
                    self.stats.alerts_by_type[alert.type] += 1
        self.stats.consumed += count
        self.stats.dead_lettered = dlq.count
        self.stats.scored = self.stats.consumed - self.stats.dead_lettered
        if count:
            SCORING_LATENCY.observe((time.perf_counter() - started) / count)

    @staticmethod
    def _caught_up(consumer: KafkaConsumer) -> bool:
        """Every assigned partition read up to its high-water mark.

        The high-water mark from fetch responses is used, not ListOffsets, which the local
        broker answers wrongly (see tests/integration/test_broker_defects.py).
        """
        assigned = consumer.assignment()
        if not assigned:
            return False
        for tp in assigned:
            high = consumer.highwater(tp)
            if high is None or consumer.position(tp) < high:
                return False
        return True
