"""Scorer tasks: the unit of state that moves with partitions.

The transactions, DEX, trades and labels topics have equal partition counts and are keyed
alike, so partition *i* of each holds everything about the same keys. Task *i* owns those four
topic-partitions and one :class:`~pipeline.scoring.Scorer`. The range assignor gives all
four to the same group member, so a task moves as a whole.

Checkpoint order — the one thing that makes a crash harmless:

1. flush the producer: every alert for the records the state has seen is in Kafka;
2. write the task (the Scorer's state and the offsets it covers, :mod:`pipeline.state`) to
   the checkpoint store, atomically;
3. publish the checkpoint's digest to ``chainwatch.checkpoints`` and flush;
4. commit the covered offsets to Kafka.

A task restores from its newest good checkpoint and seeks to the offsets stored *in it*
(Kafka's committed offsets are for lag monitoring); with no checkpoint it starts fresh from
the beginning. So step 4 may lag: kafka-python runs the rebalance listener inside its own
event loop, where a synchronous commit cannot run, and a checkpoint taken on revocation
skips it; the next regular checkpoint commits. A commit the broker refuses (it is restarting)
is a warning, not a failure, for the same reason.

Alerts depend only on each topic-partition's own order and carry deterministic ids and
bytes, so whatever is re-read after a crash re-sends byte-identical alerts.

State: ``pipeline.state.encode({"scorer": scorer.state(), "offsets": offsets})``, state format
2 (the ``state_format`` of its meta); a restore builds a Scorer with ``scorer_factory`` (from
configuration) and loads the state into it. Nothing of the whole object graph is pickled any
more: moving a class does not invalidate checkpoints, and only the river estimators inside
travel as pickles, refused when river's version changed.

Trust: state is decoded (and its river blobs unpickled) only after the store authenticated it
(its HMAC tag verifies with the scorer's checkpoint key) or the audit log proved its digest
(``trusted``); a TaskManager refuses a store that does neither. A refused checkpoint is skipped
for an older one, with one warning: also one whose state is of another format (the previous
release's state format 1, a pickle of the whole Scorer, which is never unpickled) or does not
load; each refusal counts in ``chainwatch_checkpoints_refused_total{reason}``. With no good one
left, the task starts fresh.

Revocation: :meth:`TaskManager.release` checkpoints the revoked tasks under one deadline, half
the consumer's ``max_poll_interval_ms``: the producer flush gets the time left, and a task
whose checkpoint would start after it (or whose flush timed out) is released without one,
with a warning. Its successor restores the previous checkpoint and re-reads from there; the
alerts it re-sends are byte-identical, so that costs time, not correctness.

Binding: each checkpoint's meta records what its offsets mean, a :class:`Binding` (consumer
group, input topic names with their topic ids, Kafka cluster id). A restored checkpoint bound
to anything else (a folder left by a run on other topics, another cluster, or a topic deleted
and recreated) would seek to offsets that skip or repeat records, so it is refused with a
:class:`CheckpointMismatch` that the scorer raises before it scores anything. Ids the broker
does not report (None) are recorded as None and not compared; the local Tansu broker reports
one fixed cluster id, but a topic id of its own for every topic it creates.

Metrics: ``chainwatch_checkpoint_last_success_timestamp_seconds{task}`` is set to the time a
checkpoint's steps completed, and on restore to the restored checkpoint's time (so a task
whose writes then fail shows its age); ``chainwatch_checkpoint_size_bytes`` observes each
state written. A released task's series stays: the alert rule takes the newest over all
scorers, and the old value is what shows when the new owner cannot checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from pipeline import state
from pipeline.checkpoints import CheckpointRef, CheckpointRefused, CheckpointStore
from pipeline.errors import ChainwatchError, CheckpointError
from pipeline.metrics import CHECKPOINT_LAST_SUCCESS, CHECKPOINT_SIZE
from pipeline.scoring import Scorer
from pipeline.settings import Settings

log = logging.getLogger(__name__)
STATE_FORMAT = state.STATE_FORMAT  # the meta's state_format; 1 was the pickled Scorer
RELEASE_SHARE = 0.5  # of max_poll_interval_ms: the revocation's deadline
_MAX_POLL_INTERVAL_MS = 300_000  # kafka-python's default, when the consumer does not say


class StatefulScorer(Protocol):
    """What a task needs of its scorer to checkpoint it: plain-data state in and out."""

    events: int

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> object: ...  # notes, or None


def stateful(scorer: object) -> StatefulScorer:
    """``scorer`` as a :class:`StatefulScorer`; CheckpointError if it has no state methods."""
    if not all(callable(getattr(scorer, name, None)) for name in ("state", "load_state")):
        raise CheckpointError(f"{type(scorer).__name__} has no state()/load_state(), so its "
                              "task cannot be checkpointed or restored")
    return cast(StatefulScorer, scorer)


def task_name(partition: int) -> str:
    return f"p{partition:04d}"


class CheckpointMismatch(CheckpointError):
    """A checkpoint was written for another group, other topics or another cluster."""


@dataclass(frozen=True)
class Binding:
    """What a checkpoint's offsets refer to: group, input topics (name → topic id), cluster.

    An id is None when the broker does not report it; None is never compared.
    """

    group: str
    topics: dict[str, str | None]
    cluster_id: str | None = None

    def to_meta(self) -> dict[str, Any]:
        return {"cluster_id": self.cluster_id, "group": self.group,
                "topics": dict(sorted(self.topics.items()))}

    def mismatch(self, meta: Any) -> str:
        """Why a checkpoint with binding ``meta`` (from its meta) is not for us; "" if it is."""
        if not isinstance(meta, dict) or set(meta) != {"cluster_id", "group", "topics"} \
                or not isinstance(meta["topics"], dict):
            return "it records no group, topics and cluster id (an older or foreign checkpoint)"
        if meta["group"] != self.group:
            return f"it was written by group {meta['group']!r}, not {self.group!r}"
        if sorted(meta["topics"]) != sorted(self.topics):
            return (f"it was written for topics {', '.join(sorted(meta['topics']))}, not "
                    f"{', '.join(sorted(self.topics))}")
        if None not in (meta["cluster_id"], self.cluster_id) \
                and meta["cluster_id"] != self.cluster_id:
            return (f"it was written on Kafka cluster {meta['cluster_id']!r}, this is "
                    f"{self.cluster_id!r}")
        for topic, topic_id in sorted(self.topics.items()):
            theirs = meta["topics"][topic]
            if None not in (theirs, topic_id) and theirs != topic_id:
                return (f"topic {topic} has id {topic_id}, not {theirs} as when it was "
                        "written (the topic was recreated, or this is another cluster)")
        return ""


@dataclass
class Task:
    """One partition number's state, and the offsets (next to read) it covers per topic."""

    partition: int
    scorer: Scorer
    offsets: dict[str, int] = field(default_factory=dict)
    restored_from: CheckpointRef | None = None
    uncheckpointed: int = 0  # records processed since the last checkpoint
    last_checkpoint: float = field(default_factory=time.monotonic)
    # with transactions (consumers/transactions.py): the task's own producer, the offsets up
    # to which a restored task re-reads without output (it was committed before), and the
    # open transaction's record count and start
    producer: KafkaProducer | None = None
    replay_until: dict[str, int] = field(default_factory=dict)
    txn_records: int = 0
    txn_started: float = 0.0

    @property
    def name(self) -> str:
        return task_name(self.partition)

    def advance(self, topic: str, offset: int) -> None:
        self.offsets[topic] = offset + 1
        self.uncheckpointed += 1
        self.txn_records += 1

    def replaying(self, topic: str, offset: int) -> bool:
        """Whether this record's output was committed before the task was restored."""
        return offset < self.replay_until.get(topic, 0)


class TaskManager:
    """Restores, checkpoints and releases tasks for one scorer process."""

    def __init__(self, settings: Settings, store: CheckpointStore, producer: KafkaProducer, *,
                 scorer_factory: Callable[[], Scorer] = Scorer,
                 trusted: Callable[[str], bool] | None = None, keep: int = 3,
                 binding: Binding | None = None) -> None:
        if not store.authenticates and trusted is None:
            raise CheckpointError(f"checkpoint store {store.uri} has no key and no audit check: "
                                  "the scorer restores only authenticated checkpoints; open "
                                  "it with Settings.checkpoint_store()")
        self.settings = settings
        self.store = store
        self.producer = producer
        self.scorer_factory = scorer_factory
        self.trusted = trusted
        self.keep = keep
        self.group = settings.consumer_group
        self.topics = (settings.topics.transactions, settings.topics.dex,
                       settings.topics.trades, settings.topics.labels)
        self.binding = binding or Binding(self.group, dict.fromkeys(self.topics))
        self.tasks: dict[int, Task] = {}
        self.checkpoints_written = 0
        # an error restoring a task: the rebalance listener cannot raise (kafka-python logs
        # and swallows it), so the service raises this after the poll, before scoring
        self.failure: ChainwatchError | None = None

    # -- assignment ---------------------------------------------------------------------------

    def assign(self, consumer: KafkaConsumer, partitions: set[int]) -> None:
        """Open tasks for newly assigned partition numbers and seek to their offsets.

        A task that cannot be restored (store unreachable, checkpoint of another run) is not
        opened: the error is kept in :attr:`failure` and no further task is opened.
        """
        for partition in sorted(partitions - set(self.tasks)):
            if self.failure is not None:
                return
            try:
                task = self._restore(partition)
            except ChainwatchError as exc:
                self.failure = exc
                return
            self.tasks[partition] = task
            for topic in self.topics:
                tp = TopicPartition(topic, partition)
                if tp not in consumer.assignment():
                    continue
                if topic in task.offsets:
                    consumer.seek(tp, task.offsets[topic])
                else:
                    consumer.seek_to_beginning(tp)
            log.info("task %s opened %s", task.name, f"from checkpoint {task.restored_from.seq}"
                     if task.restored_from else "with fresh state")

    def release(self, consumer: KafkaConsumer, partitions: set[int]) -> None:
        """Checkpoint and drop tasks whose partitions were revoked (from the listener), all
        under one deadline (see the module docstring); never raises."""
        budget = RELEASE_SHARE * max_poll_interval_ms(consumer) / 1000
        deadline = time.monotonic() + budget
        for partition in sorted(partitions & set(self.tasks)):
            task = self.tasks.pop(partition)
            if task.uncheckpointed == 0:
                continue
            previous = (f"checkpoint {task.restored_from.seq}" if task.restored_from
                        else "no checkpoint (a fresh start)")
            if time.monotonic() >= deadline:
                log.warning("task %s released without a checkpoint: the revocation's %.0f s "
                            "are spent; its successor restores %s and re-reads %d records",
                            task.name, budget, previous, task.uncheckpointed)
                continue
            try:
                self.checkpoint(consumer, task, commit=False, deadline=deadline)
            except (ChainwatchError, KafkaError) as exc:
                log.warning("task %s released, its revocation checkpoint incomplete (%s); "
                            "its successor restores this checkpoint if it was written, else %s, "
                            "and re-reads from there", task.name,
                            " ".join(str(exc).split()) or type(exc).__name__, previous)

    def _restore(self, partition: int, committed: dict[str, int] | None = None) -> Task:
        """The task of ``partition`` from its newest good checkpoint, else fresh; with
        ``committed`` (offsets by topic), only a checkpoint that covers no record beyond
        them (a newer one was written in a transaction that did not commit)."""
        loaded: dict[str, Any] = {}

        def accept(ref: CheckpointRef, data: bytes) -> None:
            # authenticated: its tag verified, or the audit log proved it
            if reason := self.binding.mismatch(ref.meta.get("binding")):
                raise CheckpointMismatch(
                    f"checkpoint {ref.uri} is from another run: {reason}; restoring it would "
                    "skip or repeat records, so nothing was scored. Use another --checkpoints "
                    f"folder or --group, or delete the folder of group {self.group} in the "
                    "store to start afresh")
            offsets = ref.meta.get("offsets")
            if committed is not None and isinstance(offsets, dict) and any(
                    offset > committed.get(topic, 0) for topic, offset in offsets.items()):
                raise CheckpointRefused(
                    f"checkpoint {ref.uri} covers records beyond the committed offsets: the "
                    "transaction that was to commit it did not", reason="uncommitted")
            loaded.update(self._load(ref, data))

        found = self.store.load_newest_good(self.group, task_name(partition),
                                            trusted=self.trusted, accept=accept)
        if found is None:
            return Task(partition, self.scorer_factory())
        ref = found[0]
        CHECKPOINT_LAST_SUCCESS.labels(task=ref.task).set(ref.created_at / 1000)
        return Task(partition, loaded["scorer"], loaded["offsets"], restored_from=ref)

    def _load(self, ref: CheckpointRef, data: bytes) -> dict[str, Any]:
        """A Scorer and offsets from a checkpoint's bytes; CheckpointRefused if they cannot
        be (the caller falls back to an older checkpoint)."""
        written, found = ref.meta.get("state_format"), state.format_of(data)
        if written != STATE_FORMAT or found != STATE_FORMAT:
            if written == 1:
                what = ("format 1, a pickle of the whole Scorer by the previous release, "
                        "which is never unpickled")
            elif written != STATE_FORMAT:
                what = f"format {written!r}"
            else:
                what = (f"format {STATE_FORMAT} by its meta, but its bytes carry "
                        + (f"the header of format {found}" if found is not None
                           else "no state header"))
            raise CheckpointRefused(f"refusing checkpoint {ref.uri}: its state is of {what}; "
                                    f"this chainwatch reads state format {STATE_FORMAT}",
                                    reason="state_format")
        try:
            tree = state.decode(data)
            if set(tree) != {"scorer", "offsets"} or not isinstance(tree["offsets"], dict) \
                    or not all(isinstance(t, str) and type(o) is int
                               for t, o in tree["offsets"].items()):
                raise state.StateError("expected a scorer's state and offsets by topic")
            scorer = self.scorer_factory()
            stateful(scorer).load_state(tree["scorer"])
        except Exception as exc:  # whatever the state does not fit: a refusal, no traceback
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise CheckpointRefused(f"refusing checkpoint {ref.uri}: its state does not load "
                                    f"({reason})", reason="state") from exc
        return {"scorer": scorer, "offsets": dict(tree["offsets"])}

    # -- checkpoints ----------------------------------------------------------------------------

    def due(self, task: Task, every_records: int, every_s: float) -> bool:
        return task.uncheckpointed >= every_records or (
            task.uncheckpointed > 0 and time.monotonic() - task.last_checkpoint >= every_s)

    def checkpoint(self, consumer: KafkaConsumer, task: Task, commit: bool = True,
                   deadline: float | None = None) -> CheckpointRef | None:
        """Steps 1-4 of the module docstring, in that order (4 only when ``commit``).

        With ``deadline`` (a :func:`time.monotonic` time), the producer's flushes wait at most
        until then; one that times out raises KafkaTimeoutError before anything is written.
        """
        if task.uncheckpointed == 0:  # nothing new since the last one (or since a fresh start)
            return task.restored_from
        ref, size = self._write(task, deadline)  # 1-2, and 3 sent
        self._flush(deadline)  # 3. the digest is published
        commits = {TopicPartition(topic, task.partition): OffsetAndMetadata(offset, None, -1)
                   for topic, offset in task.offsets.items()}
        if commits and commit:
            try:
                consumer.commit(commits)  # 4. offsets last
            except KafkaError as exc:  # the broker is away: the checkpoint holds the offsets
                log.warning("task %s: committing offsets failed (%s); the checkpoint holds "
                            "them and the next checkpoint commits", task.name, exc)
        self._written(task, ref, size)
        return ref

    def _write(self, task: Task, deadline: float | None) -> tuple[CheckpointRef, int]:
        """Flush the task's alerts, write its state to the store and send the digest (not
        flushed); the new ref and the state's size."""
        self._flush(deadline)  # 1. alerts before the state that produced them
        data = state.encode({"scorer": stateful(task.scorer).state(), "offsets": task.offsets})
        meta = {"partition": task.partition, "offsets": dict(sorted(task.offsets.items())),
                "events": task.scorer.events, "state_format": STATE_FORMAT,
                "binding": self.binding.to_meta()}
        ref = self.store.save(self.group, task.name, data, meta)  # 2. atomic write
        record = orjson.dumps(ref.to_record(), option=orjson.OPT_SORT_KEYS)
        self.producer_for(task).send(self.settings.topics.checkpoints, value=record,
                                     key=f"{self.group}/{task.name}".encode())
        return ref, len(data)

    def _written(self, task: Task, ref: CheckpointRef, size: int) -> None:
        """Bookkeeping once a checkpoint's steps are done: metrics, pruning, the task's
        counters."""
        CHECKPOINT_LAST_SUCCESS.labels(task=task.name).set(time.time())
        CHECKPOINT_SIZE.observe(size)
        self.store.prune(self.group, task.name, keep=self.keep, good=ref)
        task.restored_from = ref
        task.uncheckpointed = 0
        task.last_checkpoint = time.monotonic()
        self.checkpoints_written += 1

    def producer_for(self, task: Task) -> KafkaProducer:
        """The producer a task's output goes through: the service's one, here."""
        return self.producer

    def open_pending(self, consumer: KafkaConsumer) -> set[int]:
        """Tasks to open outside the rebalance listener: none here (they open in it)."""
        return set()

    def commit_due(self, consumer: KafkaConsumer, interval_s: float | None = None) -> None:
        """Output to commit between checkpoints: none here (alerts are sent as raised)."""

    def close(self) -> None:
        """Release what the tasks hold beyond the service's clients: nothing here."""

    def _flush(self, deadline: float | None) -> None:
        if deadline is None:
            self.producer.flush()
        else:
            self.producer.flush(timeout=max(deadline - time.monotonic(), 0.0))

    def checkpoint_all(self, consumer: KafkaConsumer) -> None:
        for task in list(self.tasks.values()):
            self.checkpoint(consumer, task)

    def metrics(self) -> dict[str, Any]:
        return {"tasks": len(self.tasks), "checkpoints_written": self.checkpoints_written}


def max_poll_interval_ms(consumer: KafkaConsumer) -> float:
    """The consumer's ``max_poll_interval_ms`` (kafka-python keeps its settings in
    ``config``); the default when it does not say."""
    config = getattr(consumer, "config", None)
    value = config.get("max_poll_interval_ms") if isinstance(config, dict) else None
    return float(value) if isinstance(value, int | float) and value > 0 \
        else _MAX_POLL_INTERVAL_MS
