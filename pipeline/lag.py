"""Consumer lag per partition, from the fetch high-water mark.

Lag is ``consumer.highwater(tp) - consumer.position(tp)``: the high-water mark comes with
every fetch response, so it costs no request. ListOffsets (``end_offsets()``) is not used:
the local broker answers it wrongly (``../shared/docs/broker.md``,
``tests/integration/test_broker_defects.py``).

A :class:`LagMonitor` belongs to the thread that polls the consumer (kafka-python consumers
are not thread-safe). That thread calls :meth:`LagMonitor.update` after each poll; at most
every ``interval_s`` it reads the consumer, sets ``chainwatch_consumer_lag{topic,partition}``
and publishes an immutable :class:`LagSnapshot` that any thread may read. A revoked
partition's series is removed (:meth:`LagMonitor.forget`, from the rebalance listener, and
again at the next update).

:class:`ConsumerHealth` is the :class:`~pipeline.health.ServiceHealth` of a consumer loop:
one :meth:`~ConsumerHealth.observe` per poll beats, and publishes readiness from the lag.

>>> snap = LagSnapshot({("chain.dex", 0): 0, ("chain.dex", 1): 1_500})
>>> snap.assigned, snap.total, snap.caught_up(max_lag=1_000)
(True, 1500, False)
>>> snap.behind(max_lag=1_000)
'chain.dex[1] is 1500 records behind (more than 1000)'
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from prometheus_client import Gauge

from pipeline.health import ServiceHealth
from pipeline.metrics import CONSUMER_LAG

Partition = tuple[str, int]  # (topic, partition)
READY_MAX_LAG = 1_000  # records per partition behind its high-water mark that still count


@dataclass(frozen=True)
class LagSnapshot:
    """Lag of each assigned partition; ``None`` until the partition's first fetch."""

    lags: Mapping[Partition, int | None] = field(default_factory=dict)
    taken_at: float = 0.0  # time.monotonic() of the reading

    def __post_init__(self) -> None:
        object.__setattr__(self, "lags", MappingProxyType(dict(self.lags)))

    @property
    def assigned(self) -> bool:
        return bool(self.lags)

    @property
    def total(self) -> int:
        """Records behind over every partition fetched so far."""
        return sum(lag for lag in self.lags.values() if lag is not None)

    def caught_up(self, max_lag: int = READY_MAX_LAG) -> bool:
        """Assigned, every partition fetched, and none more than ``max_lag`` behind."""
        return self.behind(max_lag) is None

    def readiness(self, max_lag: int = READY_MAX_LAG) -> tuple[bool, str]:
        """(caught up, why or why not) for a readiness probe."""
        behind = self.behind(max_lag)
        if behind is not None:
            return False, behind
        count = len(self.lags)
        return True, (f"{count} partition{'s' if count != 1 else ''} assigned, "
                      f"{self.total} records behind")

    def behind(self, max_lag: int = READY_MAX_LAG) -> str | None:
        """Why the consumer is not caught up, in a few words; ``None`` when it is."""
        if not self.lags:
            return "no partitions assigned yet"
        waiting = sorted(p for p, lag in self.lags.items() if lag is None)
        if waiting:
            return f"{len(waiting)} of {len(self.lags)} partitions not fetched yet"
        (topic, partition), worst = max(self.lags.items(), key=lambda item: item[1] or 0)
        if worst is not None and worst > max_lag:
            return f"{topic}[{partition}] is {worst} records behind (more than {max_lag})"
        return None


class LagMonitor:
    """Reads a consumer's lag from its own thread; exports and publishes it."""

    def __init__(self, gauge: Gauge = CONSUMER_LAG, interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gauge = gauge
        self.interval_s = interval_s
        self._clock = clock
        self._next = 0.0
        self._exported: set[Partition] = set()
        self.snapshot = LagSnapshot()  # replaced whole, never mutated: safe to read anywhere

    def update(self, consumer: KafkaConsumer, force: bool = False) -> LagSnapshot:
        """Read the lag if ``interval_s`` has passed (or ``force``); the newest snapshot."""
        now = self._clock()
        if not force and now < self._next:
            return self.snapshot
        self._next = now + self.interval_s
        lags: dict[Partition, int | None] = {}
        for tp in consumer.assignment():
            lags[tp.topic, tp.partition] = _lag(consumer, tp)
        self.forget(self._exported - set(lags))
        for (topic, partition), lag in lags.items():
            if lag is not None:
                self.gauge.labels(topic=topic, partition=str(partition)).set(lag)
                self._exported.add((topic, partition))
        self.snapshot = LagSnapshot(lags, now)
        return self.snapshot

    def forget(self, partitions: Iterable[Partition | TopicPartition]) -> None:
        """Remove revoked partitions' series (and drop them from the snapshot)."""
        gone = {(p[0], p[1]) for p in partitions}
        for topic, partition in gone & self._exported:
            self.gauge.remove(topic, str(partition))
        self._exported -= gone
        if gone & set(self.snapshot.lags):
            kept = {p: lag for p, lag in self.snapshot.lags.items() if p not in gone}
            self.snapshot = LagSnapshot(kept, self.snapshot.taken_at)

    def close(self) -> None:
        """Remove every series this monitor exported (the consumer is closing)."""
        self.forget(set(self._exported))
        self.snapshot = LagSnapshot()


class ConsumerHealth(ServiceHealth):
    """A consumer loop's health: alive while it polls, ready while it is caught up.

    Only the polling thread calls :meth:`observe` and uses :attr:`lag`; any thread may ask
    :meth:`alive` and :meth:`ready`.
    """

    def __init__(self, ready_max_lag: int = READY_MAX_LAG, **health: Any) -> None:
        super().__init__(**health)
        self.ready_max_lag = ready_max_lag
        self.lag = LagMonitor()

    def observe(self, consumer: KafkaConsumer) -> None:
        """After each poll: beat, and at most every second publish lag and readiness."""
        self.beat()
        before = self.lag.snapshot
        snapshot = self.lag.update(consumer)
        if snapshot is not before:
            self.set_ready(*snapshot.readiness(self.ready_max_lag))

    def close(self, reason: str = "stopped") -> None:
        """Not ready any more; the lag series are removed."""
        self.set_ready(False, reason)
        self.lag.close()


def _lag(consumer: KafkaConsumer, tp: TopicPartition) -> int | None:
    high = consumer.highwater(tp)
    if high is None:
        return None  # not fetched yet: no high-water mark, and maybe no position either
    try:
        position = consumer.position(tp, timeout_ms=0)  # known after a fetch: no request
    except KafkaError:  # a lag reading never stops a service
        return None
    if position is None:
        return None
    return max(int(high) - int(position), 0)
