"""Plan records in a child process, send them from this one.

kafka-python spends ~35 µs of Python per record it sends; reading, validating and encoding a
record costs about as much again. In one process both share one GIL, so a producer reached
about half the raw send rate. Here a *planner* runs in a spawned child: it reads its source
and writes encoded messages to an :class:`Outbox`, which hands them over in batches through a
bounded queue (back-pressure). The parent only sends, and at each checkpoint the planner asks
for, it flushes the producer and then calls ``on_checkpoint`` (which saves the cursor): the
order that makes a cursor safe. A send that failed (the broker refused it, or its delivery
timed out) stops the run with a :class:`SendFailed` before the next cursor is saved, so
the cursor never moves past a record that is not stored; a rerun resumes before it.

A planner is a module-level function ``planner(job, outbox, stop) -> result``; ``job`` and
``result`` are picklable. The child ignores SIGINT/SIGTERM (the parent stops it through
``stop``) and is killed if the parent dies (PR_SET_PDEATHSIG on Linux).

The sending loop publishes its health (:mod:`pipeline.health`): it beats on every turn, and
is ready from the moment the producer has connected and read the topics' partitions until
it stops.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import queue
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.synchronize import Event
from typing import Any, TypeVar

import orjson
from kafka.partitioner.default import murmur2

from pipeline import clients
from pipeline.errors import ChainwatchError
from pipeline.health import ServiceHealth
from pipeline.metrics import DLQ_RECORDS, RECORDS_PRODUCED
from pipeline.settings import Settings

BATCH = 2_000
Message = tuple[str, bytes | None, bytes, int | None]  # topic, key, value, partition
QUEUE_BATCHES = 8
PARTITION_CACHE = 200_000  # keys remembered; cleared whole when full (bounded memory)
Job = TypeVar("Job")
Result = TypeVar("Result")
Planner = Callable[[Any, "Outbox", Event], Any]


class SendFailed(ChainwatchError):
    """Records were handed to the producer but not stored by the broker."""


class _Failures:
    """Counts failed sends (kafka-python reports them on the send's future, not on flush)."""

    def __init__(self) -> None:
        self.count = 0
        self.first: BaseException | None = None

    def __call__(self, exc: BaseException) -> None:
        self.count += 1
        if self.first is None:
            self.first = exc

    def check(self) -> None:
        if self.count:
            raise SendFailed(f"{self.count} records could not be sent ({self.first!r}); the "
                             "cursor was not moved past them: check the broker, then run "
                             "again to resume")


class Outbox:
    """The planner's side: ``send`` messages, ask for ``checkpoint``s.

    It also picks each keyed message's partition, with the Java client's murmur2 hash that
    kafka-python's default partitioner uses, so keys land where any Kafka client puts them;
    that takes ~10 µs a record off the sending process.
    """

    def __init__(self, channel: Any, partitions: dict[str, int], batch: int = BATCH) -> None:
        self._channel = channel
        self._partitions = partitions
        self._batch_size = batch
        self._batch: list[Message] = []
        self._partition_of: dict[tuple[str, bytes], int] = {}  # keys repeat: pools, senders
        self.sent = 0

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> None:
        partition = None
        if key is not None and topic in self._partitions:
            partition = self._partition_of.get((topic, key))
            if partition is None:
                if len(self._partition_of) >= PARTITION_CACHE:
                    self._partition_of.clear()
                partition = (murmur2(key) & 0x7FFFFFFF) % self._partitions[topic]
                self._partition_of[topic, key] = partition
        self._batch.append((topic, key, value or b"", partition))
        self.sent += 1
        if len(self._batch) >= self._batch_size:
            self.flush()

    def flush(self) -> None:
        if self._batch:
            self._channel.put(("batch", self._batch))
            self._batch = []

    def checkpoint(self, payload: Any) -> None:
        """Everything sent before this is durable before ``on_checkpoint(payload)`` runs."""
        self.flush()
        self._channel.put(("checkpoint", payload))


def run(planner: Planner, job: Any, settings: Settings, *,
        on_checkpoint: Callable[[Any], None] | None = None,
        stop: threading.Event | None = None, stage: str = "producer",
        linger_ms: int | None = None, health: ServiceHealth | None = None) -> Any:
    """Run ``planner(job, outbox, stop)`` in a child process; send what it plans.

    ``linger_ms`` overrides the producer's batching delay (paced runs want it small);
    ``health`` receives the loop's beats and readiness."""
    health = health or ServiceHealth()
    producer = clients.producer(
        settings, **({"linger_ms": linger_ms} if linger_ms is not None else {}))
    partitions = _partition_counts(producer, settings)
    health.set_ready(True, f"connected to {settings.bootstrap_servers}, sending")
    ctx = mp.get_context("spawn")
    channel = ctx.Queue(maxsize=QUEUE_BATCHES)
    child_stop = ctx.Event()
    child = ctx.Process(target=_child_main,
                        args=(planner, job, channel, child_stop, partitions),
                        name="chainwatch-planner", daemon=True)
    child.start()
    dlq_topic = settings.topics.dlq
    failures = _Failures()
    try:
        while True:
            health.beat()
            if stop is not None and stop.is_set():
                child_stop.set()
            try:
                kind, payload = channel.get(timeout=0.2)
            except queue.Empty:
                if not child.is_alive():
                    raise ChainwatchError(
                        f"the planner process ended unexpectedly (exit code {child.exitcode})"
                    ) from None
                continue
            if kind == "batch":
                _send_batch(producer, payload, dlq_topic, stage, failures)
            elif kind == "checkpoint":
                producer.flush()
                failures.check()
                if on_checkpoint is not None:
                    on_checkpoint(payload)
            elif kind == "done":
                producer.flush()
                failures.check()
                return payload
            else:  # "error": a ChainwatchError raised in the planner, re-raised here
                error_type, message = payload
                raise error_type(message)
    finally:
        health.set_ready(False, "stopped")
        child_stop.set()
        producer.close()
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
            child.join()
        channel.close()


def _partition_counts(producer: Any, settings: Settings) -> dict[str, int]:
    """Partitions of each chainwatch topic (absent topics are left to the producer)."""
    counts: dict[str, int] = {}
    for topic in settings.topics.all().values():
        try:
            found = producer.partitions_for(topic)
        except Exception:  # not created yet: kafka-python will partition these itself
            continue
        if found:
            counts[topic] = len(found)
    return counts


def _send_batch(producer: Any, batch: list[Message], dlq_topic: str, stage: str,
                failures: _Failures) -> None:
    send = producer.send
    per_topic: dict[str, int] = {}
    for topic, key, value, partition in batch:
        send(topic, value=value, key=key, partition=partition).add_errback(failures)
        per_topic[topic] = per_topic.get(topic, 0) + 1
        if topic == dlq_topic:
            DLQ_RECORDS.labels(reason=orjson.loads(value)["reason"], stage=stage).inc()
    for topic, count in per_topic.items():
        RECORDS_PRODUCED.labels(topic=topic).inc(count)


def _child_main(planner: Planner, job: Any, channel: Any, stop: Event,
                partitions: dict[str, int]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    try:
        result = planner(job, Outbox(channel, partitions), stop)
    except ChainwatchError as exc:
        channel.put(("error", (type(exc), str(exc))))
    else:
        channel.put(("done", result))
    channel.close()
    channel.join_thread()


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL.value)  # PR_SET_PDEATHSIG: SIGKILL when the parent dies
    except OSError:
        return
