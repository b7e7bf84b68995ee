"""The notifier: every alert of ``chainwatch.alerts`` at or above a severity, to a webhook.

It reads the alerts topic in its own consumer group (``chainwatch-notify`` unless told
otherwise; several notifiers in one group share the partitions, notifiers in different groups
each see every alert). Each alert is filtered by severity, or delivered
(:mod:`pipeline.webhooks`: retries with backoff on connection errors, timeouts, 429 and
5xx), or, when delivery fails for good, dead-lettered to ``chainwatch.dlq`` (stage
``notify``, reason ``webhook_failed`` after the last retry or ``webhook_rejected`` for a
refusal, the detail naming the status or error and the alert id, the alert's exact bytes as
the original). A message that is not an alert is dead-lettered with its validation reason.
Then the service goes on.

**At least once.** The group's offsets are committed only past alerts that were delivered,
filtered or dead-lettered: at the end of each polled batch, at least every second within
one, and on stop. A stop (SIGTERM, Ctrl-C) during a retry's wait leaves that alert
uncommitted; a crash leaves uncommitted whatever followed the last commit. Either way a
restart sends those alerts again, so a receiver may see one twice: the body carries its
``alert_id`` and the request an ``Idempotency-Key: <alert_id>`` header to de-duplicate on.
Nothing is skipped.

A batch whose deliveries take long (a webhook down: every alert spends its retries) stops
early, its remaining partitions sought back to their first unsent alert, so the loop polls
within ``max_poll_interval_ms`` and keeps its group membership.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from prometheus_client import Counter, Histogram

from pipeline import clients
from pipeline.alert_schema import Incoming
from pipeline.dlq import DeadLetterWriter
from pipeline.errors import ConfigError, RecordError
from pipeline.lag import READY_MAX_LAG, ConsumerHealth
from pipeline.metrics import RECORDS_CONSUMED
from pipeline.settings import Settings
from pipeline.webhooks import MAX_BACKOFF_S, Attempt, Delivery, Webhook, WebhookTarget, body

log = logging.getLogger(__name__)

GROUP = "chainwatch-notify"
COMMIT_EVERY_S = 1.0
MAX_POLL_INTERVAL_MS = 300_000

DELIVERIES = Counter(
    "chainwatch_notify_deliveries", "Alerts by what the notifier did with them (delivered, "
    "dead_lettered, filtered: one per alert), and retried: one per attempt tried again",
    ["outcome"])
ATTEMPTS = Counter(
    "chainwatch_notify_attempts", "Webhook POSTs by result (ok, timeout, connection, "
    "http_429, http_3xx, http_4xx, http_5xx)", ["result"])
DELIVERY_LATENCY = Histogram(
    "chainwatch_notify_delivery_seconds", "From an alert's first POST to its delivery, "
    "retries and their waits included",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))


@dataclass
class NotifyStats:
    consumed: int = 0
    delivered: int = 0
    filtered: int = 0
    dead_lettered: int = 0
    retries: int = 0
    attempts: int = 0
    commits: int = 0


class NotifierService:
    """Delivers the alerts topic to ``target``, committing group ``group_id``'s offsets."""

    def __init__(self, settings: Settings, target: WebhookTarget,
                 stop: threading.Event | None = None, *, group_id: str = GROUP,
                 poll_timeout_ms: int = 200, max_batch: int = 100,
                 ready_max_lag: int = READY_MAX_LAG, webhook: Webhook | None = None,
                 session_timeout_ms: int | None = None,
                 heartbeat_interval_ms: int | None = None) -> None:
        self.settings = settings
        self.target = target
        self.group_id = group_id
        self.stop_event = stop or threading.Event()
        self.poll_timeout_ms = poll_timeout_ms
        self.max_batch = max_batch
        self.webhook = webhook or Webhook(target)
        # the group's session (None: the settings' consumer default, 10 s): a member that
        # stops heartbeating, or a SIGKILLed notifier, holds its partitions that long
        self.group_timeouts = {k: v for k, v in (("session_timeout_ms", session_timeout_ms),
                                                 ("heartbeat_interval_ms",
                                                  heartbeat_interval_ms)) if v is not None}
        self.stats = NotifyStats()
        self.health = ConsumerHealth(ready_max_lag)
        # the longest one alert may take (every attempt timing out, every wait at its cap),
        # so a batch stops early enough to poll again within max_poll_interval_ms
        worst = (target.retries + 1) * target.timeout_ms / 1000 + target.retries * MAX_BACKOFF_S
        self.max_poll_interval_ms = max(MAX_POLL_INTERVAL_MS, int(worst * 2000) + 60_000)
        self.batch_budget_s = self.max_poll_interval_ms / 1000 / 2 - worst

    def alive(self) -> tuple[bool, str]:
        return self.health.alive()

    def ready(self) -> tuple[bool, str]:
        return self.health.ready()

    def run(self, input_finished: Callable[[], bool] | None = None) -> NotifyStats:
        """Notify until stopped, or until ``input_finished()`` and every partition is read."""
        producer = clients.producer(self.settings, linger_ms=5)
        try:
            consumer = clients.consumer(
                self.settings, group_id=self.group_id, enable_auto_commit=False,
                max_poll_interval_ms=self.max_poll_interval_ms, **self.group_timeouts)
        except BaseException:
            producer.close()
            raise
        dlq = DeadLetterWriter(producer, self.settings.topics.dlq, stage="notify")
        try:
            topic = self.settings.topics.alerts
            if not clients.partitions_for(consumer, topic):
                raise ConfigError(f"topic {topic} does not exist; create the topics with "
                                  "`chainwatch topics`")
            consumer.subscribe([topic])
            log.info("notify: group %s reads %s, sends %s alerts and above as %s to %s",
                     self.group_id, topic, self.target.min_severity, self.target.format,
                     self.target.shown)
            self.health.set_ready(False, "joining the group")
            while not self.stop_event.is_set():
                batch = consumer.poll(timeout_ms=self.poll_timeout_ms,
                                      max_records=self.max_batch)
                self.health.observe(consumer)
                if batch:
                    self._batch(consumer, batch, dlq)
                elif input_finished is not None and input_finished() and \
                        clients.caught_up(consumer):
                    break
        finally:
            self.health.close()
            consumer.close(autocommit=False)
            producer.close()
        self.stats.dead_lettered = dlq.count
        return self.stats

    def _batch(self, consumer: KafkaConsumer, batch: dict[TopicPartition, list[Any]],
               dlq: DeadLetterWriter) -> None:
        """Each message in turn; commits as the module docstring says."""
        started = last_commit = time.monotonic()
        done: dict[TopicPartition, int] = {}
        left = sorted(batch, key=lambda tp: tp.partition)
        try:
            while left:
                tp = left[0]
                for msg in batch[tp]:
                    if self.stop_event.is_set() or \
                            time.monotonic() - started > self.batch_budget_s:
                        return  # the rest is sought back in finally
                    if not self._one(msg, tp, dlq):
                        return  # stopped while waiting to retry: this alert stays unsent
                    done[tp] = msg.offset + 1
                    self.stats.consumed += 1
                    RECORDS_CONSUMED.labels(topic=tp.topic).inc()
                    if time.monotonic() - last_commit >= COMMIT_EVERY_S:
                        self._commit(consumer, done)
                        last_commit = time.monotonic()
                left.pop(0)
        finally:
            for tp in left:  # not all sent: fetch them again, from the first one not done
                consumer.seek(tp, done.get(tp, batch[tp][0].offset))
            self._commit(consumer, done)

    def _one(self, msg: Any, tp: TopicPartition, dlq: DeadLetterWriter) -> bool:
        """Filter, deliver or dead-letter one message; False if a stop interrupted it."""
        raw: bytes = msg.value or b""
        source = {"topic": tp.topic, "partition": tp.partition, "offset": msg.offset}
        try:
            alert = Incoming.parse(raw).alert
        except RecordError as exc:
            dlq.write_error(raw, exc, source)
            DELIVERIES.labels(outcome="dead_lettered").inc()
            return True
        if not self.target.wants(alert.severity):
            self.stats.filtered += 1
            DELIVERIES.labels(outcome="filtered").inc()
            return True
        delivery = self.webhook.deliver(body(self.target, alert, raw), alert.alert_id,
                                        wait=self._wait, on_retry=self._retried)
        for attempt in delivery.attempts:
            ATTEMPTS.labels(result=attempt.kind).inc()
        self.stats.attempts += len(delivery.attempts)
        if delivery.outcome == "interrupted":
            return False
        if delivery.outcome == "delivered":
            self.stats.delivered += 1
            DELIVERIES.labels(outcome="delivered").inc()
            DELIVERY_LATENCY.observe(delivery.elapsed_s)
            return True
        self._dead_letter(raw, alert.alert_id, delivery, source | {"alert_id": alert.alert_id},
                          dlq)
        return True

    def _dead_letter(self, raw: bytes, alert_id: str, delivery: Delivery,
                     source: dict[str, Any], dlq: DeadLetterWriter) -> None:
        n = len(delivery.attempts)
        if delivery.outcome == "failed":
            reason = "webhook_failed"
            detail = f"{delivery.last.describe()} on the last of {n} attempts"
        else:
            reason = "webhook_rejected"
            detail = f"{delivery.last.describe()} (not retried) on attempt {n}"
        detail = f"alert {alert_id} to {self.target.shown}: {detail}"
        dlq.write(raw, reason, detail, source)
        DELIVERIES.labels(outcome="dead_lettered").inc()
        log.warning("notify: %s; dead-lettered (%s)", detail, reason)

    def _retried(self, attempt: Attempt, pause_s: float) -> None:
        self.stats.retries += 1
        DELIVERIES.labels(outcome="retried").inc()
        log.info("notify: %s from %s; trying again in %.2f s", attempt.describe(),
                 self.target.shown, pause_s)

    def _wait(self, seconds: float) -> bool:
        """Wait between attempts, beating the health clock; True if a stop came."""
        deadline = time.monotonic() + seconds
        while True:
            self.health.beat()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self.stop_event.is_set()
            if self.stop_event.wait(min(remaining, 1.0)):
                return True

    def _commit(self, consumer: KafkaConsumer, done: dict[TopicPartition, int]) -> None:
        if not done:
            return
        offsets = {tp: OffsetAndMetadata(offset, None, -1) for tp, offset in done.items()}
        try:
            consumer.commit(offsets)
            self.stats.commits += 1
        except KafkaError as exc:  # a rebalance or a broker away: the next commit covers it
            log.warning("notify: committing offsets failed (%s: %s); a restart may send "
                        "these alerts again", type(exc).__name__, exc)
