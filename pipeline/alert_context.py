"""The records around an alert, as the series its page draws: price, liquidity, flow.

An alert names the record that raised it (``source``: topic, partition, offset). Everything
about one pool, one market or one sender lands on one partition (the records' keys), so the
records just before and after that offset on that partition hold its subject's recent story.
:func:`read_contexts` reads them back from Kafka (``before`` records before the alert's offset,
a tenth as many after) and keeps those about the alert's subject, one :class:`Sample` each:

=================  ===========================================================================
record             sample
=================  ===========================================================================
pool event         price (WETH per token unit, from the reserves after it), liquidity (its
                   WETH reserve, in ether); a swap's WETH in (a buy) or out (a sell) as flow
trade              its price; its quote volume as flow in (a buy) or out (a sell)
transaction        the ether it moved to (flow in) or from (flow out) the subject's address
=================  ===========================================================================

A pool event is about the alert when its pool is the subject; a trade when its series
(``stream``, else ``venue:market``) or market is; a transaction when the subject (an address,
or the hash of the transaction that raised the alert) or one of the alert's addresses sent or
received it. Records of other kinds (token transfers, labels), and ones that do not decode, are
skipped. A pool without a WETH side has no price or liquidity here (its flows still count).

Kafka keeps records only for its retention; the alert sink therefore reads each alert's
context as it stores the alert (a background thread, :class:`ContextFetcher`) and keeps it in
the alert store's ``alert_context`` table, where the web view finds it later, broker or not.

>>> from pipeline.records import Trade
>>> t = Trade(venue="binance", market="X/BTC", side="buy", price=2e-6, amount=10.0,
...           quote_volume=2e-5, timestamp=1_500_000_000_250)
>>> s = _Matcher("binance:X/BTC", ()).sample(t, 7)
>>> s.at, s.offset, s.price, s.liquidity, s.flow_in, s.flow_out
(1500000000.25, 7, 2e-06, None, 2e-05, 0.0)
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from prometheus_client import Counter

from pipeline import clients
from pipeline.alert_schema import CONTEXT
from pipeline.alert_store import AlertStore
from pipeline.alerts import Alert
from pipeline.codec import decode
from pipeline.errors import ChainwatchError, RecordError
from pipeline.features.pools import WETH
from pipeline.features.trades import trade_from_swap
from pipeline.records import DexEvent, Trade, Transaction
from pipeline.settings import Settings

log = logging.getLogger(__name__)

ETHER = 1e18
AFTER_SHARE = 10  # records read after the alert: before // AFTER_SHARE
MAX_SPAN = 200_000  # records read in one pass over a partition, at most
POLL_MS = 200
ADDRESS = re.compile(r"0x[0-9a-f]{40}")

CONTEXTS = Counter("chainwatch_alert_context", "Alert contexts the alert sink read back from "
                   "Kafka, by outcome (stored, skipped: its queue was full, failed)",
                   ["outcome"])


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # stream time, unix seconds
    offset: int  # on the alert's source partition
    item_id: str
    price: float | None = None
    liquidity: float | None = None
    flow_in: float = 0.0
    flow_out: float = 0.0


@dataclass(frozen=True)
class Context:
    """The subject's records around one alert (``samples`` in offset order)."""

    alert_id: str
    kind: str  # "pool", "market" or "address": what the subject is
    topic: str
    partition: int
    first_offset: int  # the offsets read, both included
    last_offset: int
    samples: tuple[Sample, ...]

    @property
    def units(self) -> tuple[str, str]:
        """What price and flow are in."""
        return {"pool": ("WETH per token", "WETH"), "market": ("quote per unit", "quote"),
                "address": ("", "ether")}.get(self.kind, ("", ""))

    def to_json(self) -> bytes:
        return orjson.dumps({k: v for k, v in asdict(self).items() if k != "samples"}
                            | {"samples": [asdict(s) for s in self.samples]})

    @classmethod
    def from_json(cls, data: bytes | str) -> Context:
        obj = orjson.loads(data)
        return cls(alert_id=obj["alert_id"], kind=obj["kind"], topic=obj["topic"],
                   partition=obj["partition"], first_offset=obj["first_offset"],
                   last_offset=obj["last_offset"],
                   samples=tuple(Sample(**s) for s in obj["samples"]))


class _Matcher:
    """Which records are about one alert's subject, and their samples."""

    def __init__(self, subject: str, addresses: Sequence[str]) -> None:
        self.subject = subject
        self.is_address = bool(ADDRESS.fullmatch(subject))
        self.addresses = {subject, *addresses} if self.is_address else set(addresses)
        self.kind = ""

    def sample(self, record: Any, offset: int) -> Sample | None:
        if isinstance(record, DexEvent):
            return self._pool(record, offset) if record.pool_address == self.subject else None
        if isinstance(record, Trade):
            if self.subject not in (record.key, record.market):
                return None
            self.kind = self.kind or "market"
            buy = record.side == "buy"
            return Sample(record.timestamp / 1000, offset, record.item_id, price=record.price,
                          flow_in=record.quote_volume if buy else 0.0,
                          flow_out=0.0 if buy else record.quote_volume)
        if isinstance(record, Transaction):
            return self._transaction(record, offset)
        return None

    def _pool(self, ev: DexEvent, offset: int) -> Sample:
        self.kind = "pool"
        w0 = ev.token0 == WETH
        price = liquidity = None
        flow_in = flow_out = 0.0
        if WETH in (ev.token0, ev.token1):
            weth, token = (ev.reserve0, ev.reserve1) if w0 else (ev.reserve1, ev.reserve0)
            if weth and token:
                price, liquidity = weth / token, weth / ETHER
            if ev.kind == "swap" and (trade := trade_from_swap(ev, w0)) is not None:
                flow_in, flow_out = ((trade.quote_volume, 0.0) if trade.side == "buy"
                                     else (0.0, trade.quote_volume))
        return Sample(float(ev.block_timestamp), offset, ev.item_id, price=price,
                      liquidity=liquidity, flow_in=flow_in, flow_out=flow_out)

    def _transaction(self, tx: Transaction, offset: int) -> Sample | None:
        if not self.addresses and tx.item_id == self.subject:
            self.addresses = {tx.from_address}  # the alert's own transaction: its sender
        if tx.from_address not in self.addresses and tx.to_address not in self.addresses:
            return None
        self.kind = "address"
        ether = tx.value / ETHER
        flow_in = ether if tx.to_address in self.addresses else 0.0
        flow_out = ether if tx.from_address in self.addresses else 0.0
        return Sample(float(tx.block_timestamp), offset, tx.item_id, flow_in=flow_in,
                      flow_out=flow_out)


def _source(alert: Alert) -> tuple[str, int, int] | None:
    src = alert.source
    topic, partition, offset = src.get("topic"), src.get("partition"), src.get("offset")
    if isinstance(topic, str) and type(partition) is int and type(offset) is int:
        return topic, partition, offset
    return None


def read_contexts(consumer: KafkaConsumer, alerts: Iterable[Alert], before: int,
                  deadline_s: float = 30.0, stop: threading.Event | None = None
                  ) -> dict[str, Context]:
    """The context of each alert whose source partition exists (by alert id), read with
    ``consumer`` (assigned here, one pass per partition and neighbourhood of alerts); alerts
    whose records are not all read within ``deadline_s`` (or before ``stop`` is set) get the
    part that was."""
    after = max(before // AFTER_SHARE, 1)
    by_tp: dict[tuple[str, int], list[tuple[int, Alert]]] = {}
    for a in alerts:
        if (where := _source(a)) is not None:
            by_tp.setdefault(where[:2], []).append((where[2], a))
    found: dict[str, Context] = {}
    deadline = time.monotonic() + deadline_s
    for (topic, partition), located in sorted(by_tp.items()):
        if partition not in (consumer.partitions_for_topic(topic) or ()):
            continue
        for group in _neighbourhoods(sorted(located, key=lambda p: p[0]), before, after):
            found |= _read_group(consumer, TopicPartition(topic, partition), group,
                                 before=before, after=after, deadline=deadline, stop=stop)
    return found


def _neighbourhoods(located: list[tuple[int, Alert]], before: int,
                    after: int) -> Iterable[list[tuple[int, Alert]]]:
    """Alerts whose windows overlap (and span at most MAX_SPAN), read in one pass."""
    group: list[tuple[int, Alert]] = []
    for offset, alert in located:
        if group and (offset - before > group[-1][0] + after
                      or offset + after - (group[0][0] - before) > MAX_SPAN):
            yield group
            group = []
        group.append((offset, alert))
    if group:
        yield group


def _read_group(consumer: KafkaConsumer, tp: TopicPartition, group: list[tuple[int, Alert]],
                *, before: int, after: int, deadline: float,
                stop: threading.Event | None) -> dict[str, Context]:
    start, end = max(group[0][0] - before, 0), group[-1][0] + after
    matchers = [(off, a, _Matcher(a.subject, a.addresses)) for off, a in group]
    samples: dict[str, list[Sample]] = {a.alert_id: [] for _, a in group}
    consumer.assign([tp])
    consumer.seek(tp, start)
    first = last = None
    while (last is None or last < end) and time.monotonic() < deadline and \
            not (stop is not None and stop.is_set()):
        messages = consumer.poll(timeout_ms=POLL_MS).get(tp, [])
        if not messages and clients.caught_up(consumer):
            break  # the partition ends before ``end``: the alert is among its last records
        for msg in messages:
            if msg.offset > end:
                last = end
                break
            first = msg.offset if first is None else first
            last = msg.offset
            try:
                record = decode(msg.value or b"")
            except RecordError:
                continue
            for off, a, m in matchers:
                if off - before <= msg.offset <= off + after and \
                        (s := m.sample(record, msg.offset)) is not None:
                    samples[a.alert_id].append(s)
    if first is None or last is None:
        return {}
    return {a.alert_id: Context(a.alert_id, m.kind or "address", tp.topic, tp.partition,
                                max(first, off - before), min(last, off + after),
                                tuple(samples[a.alert_id]))
            for off, a, m in matchers}


def ensure_table(store: AlertStore) -> None:
    """Make the ``alert_context`` table in a store made before it existed."""
    CONTEXT.create(store.engine, checkfirst=True)


def save(store: AlertStore, contexts: Iterable[Context]) -> int:
    """Store contexts not stored yet (by alert id); how many were new."""
    rows = [{"alert_id": c.alert_id, "body": c.to_json().decode(), "fetched_at": time.time()}
            for c in contexts]
    if not rows:
        return 0
    with store.engine.begin() as conn:
        have = set(conn.execute(sa.select(CONTEXT.c.alert_id).where(
            CONTEXT.c.alert_id.in_([r["alert_id"] for r in rows]))).scalars())
        fresh = [r for r in rows if r["alert_id"] not in have]
        if fresh:
            conn.execute(sa.insert(CONTEXT), fresh)
    return len(fresh)


def load(store: AlertStore, alert_id: str) -> Context | None:
    """The stored context of ``alert_id``, if any."""
    with store.engine.connect() as conn:
        body = conn.execute(sa.select(CONTEXT.c.body).where(CONTEXT.c.alert_id == alert_id)) \
            .scalar()
    return None if body is None else Context.from_json(body)


def missing(store: AlertStore, alert_ids: Sequence[str]) -> list[str]:
    """Of ``alert_ids``, those without a stored context."""
    with store.engine.connect() as conn:
        have = set(conn.execute(sa.select(CONTEXT.c.alert_id).where(
            CONTEXT.c.alert_id.in_(list(alert_ids)))).scalars())
    return [a for a in alert_ids if a not in have]


class ContextFetcher:
    """The sink's background reader of contexts: :meth:`offer` the alerts just stored; a
    thread reads their records and stores their contexts. Bounded: when its queue is full, an
    alert is skipped (counted), never the sink slowed."""

    def __init__(self, settings: Settings, store: AlertStore, before: int,
                 max_queued: int = 10_000) -> None:
        ensure_table(store)
        self.settings = settings
        self.store = store
        self.before = before
        self.queue: queue.Queue[Alert | None] = queue.Queue(max_queued)
        self.stored = 0
        self._thread = threading.Thread(target=self._run, name="chainwatch-alert-context",
                                        daemon=True)
        self._stop = threading.Event()
        self._thread.start()

    def offer(self, alerts: Iterable[Alert]) -> None:
        for a in alerts:
            try:
                self.queue.put_nowait(a)
            except queue.Full:
                CONTEXTS.labels(outcome="skipped").inc()

    def close(self, drain_s: float = 10.0) -> None:
        """Read what is queued for at most ``drain_s``, then stop."""
        with contextlib.suppress(queue.Full):  # full: the thread sees the stop instead
            self.queue.put(None, timeout=drain_s)
        self._thread.join(drain_s)
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        consumer: KafkaConsumer | None = None
        try:
            done = False
            while not done and not self._stop.is_set():
                batch = [self.queue.get()]
                while len(batch) < 1000:
                    try:
                        batch.append(self.queue.get_nowait())
                    except queue.Empty:
                        break
                done = batch[-1] is None or None in batch
                alerts = [a for a in batch if a is not None]
                if not alerts:
                    continue
                try:
                    if consumer is None:
                        consumer = clients.consumer(self.settings, enable_auto_commit=False)
                    todo = set(missing(self.store, [a.alert_id for a in alerts]))
                    found = read_contexts(consumer, [a for a in alerts if a.alert_id in todo],
                                          self.before, stop=self._stop)
                    self.stored += save(self.store, found.values())
                    CONTEXTS.labels(outcome="stored").inc(len(found))
                except (ChainwatchError, KafkaError, sa.exc.SQLAlchemyError, OSError) as exc:
                    CONTEXTS.labels(outcome="failed").inc(len(alerts))
                    log.warning("alert context: %d alerts left without their records: %s",
                                len(alerts), str(exc).splitlines()[0])
        finally:
            if consumer is not None:
                consumer.close()
