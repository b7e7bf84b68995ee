"""Scorer tasks: the unit of state that moves with partitions.

The transactions, DEX and labels topics have equal partition counts and are keyed alike, so
partition *i* of each holds everything about the same keys. Task *i* owns those three
topic-partitions and one :class:`~pipeline.scoring.Scorer`. The range assignor gives all
three to the same group member, so a task moves as a whole.

Checkpoint order — the one thing that makes a crash harmless:

1. flush the producer: every alert for the records the state has seen is in Kafka;
2. write the task (the pickled Scorer and the offsets it covers) to the checkpoint store,
   atomically;
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

Trust: the pickled state is unpickled only after the store authenticated it (its HMAC tag
verifies with the scorer's checkpoint key) or the audit log proved its digest (``trusted``);
a TaskManager refuses a store that does neither. A refused checkpoint is skipped for an older
one, with a warning.

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
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from pipeline.checkpoints import CheckpointRef, CheckpointStore
from pipeline.errors import ChainwatchError, CheckpointError
from pipeline.metrics import CHECKPOINT_LAST_SUCCESS, CHECKPOINT_SIZE
from pipeline.scoring import Scorer
from pipeline.settings import Settings

log = logging.getLogger(__name__)
STATE_FORMAT = 1  # bump when the pickled layout changes incompatibly


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

    @property
    def name(self) -> str:
        return task_name(self.partition)

    def advance(self, topic: str, offset: int) -> None:
        self.offsets[topic] = offset + 1
        self.uncheckpointed += 1


class TaskManager:
    """Restores, checkpoints and releases tasks for one scorer process."""

    def __init__(self, settings: Settings, store: CheckpointStore, producer: KafkaProducer, *,
                 scorer_factory: Callable[[], Scorer] = Scorer,
                 trusted: Callable[[str], bool] | None = None, keep: int = 3,
                 binding: Binding | None = None) -> None:
        if not store.authenticates and trusted is None:
            raise CheckpointError(f"checkpoint store {store.uri} has no key and no audit check: "
                                  "the scorer unpickles only authenticated checkpoints; open "
                                  "it with Settings.checkpoint_store()")
        self.settings = settings
        self.store = store
        self.producer = producer
        self.scorer_factory = scorer_factory
        self.trusted = trusted
        self.keep = keep
        self.group = settings.consumer_group
        self.topics = (settings.topics.transactions, settings.topics.dex,
                       settings.topics.labels)
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
        """Checkpoint and drop tasks whose partitions were revoked (from the listener)."""
        for partition in sorted(partitions & set(self.tasks)):
            self.checkpoint(consumer, self.tasks[partition], commit=False)
            del self.tasks[partition]

    def _restore(self, partition: int) -> Task:
        found = self.store.load_newest_good(self.group, task_name(partition),
                                            trusted=self.trusted)
        if found is None:
            return Task(partition, self.scorer_factory())
        ref, data = found  # authenticated: its tag verified, or the audit log proved it
        if reason := self.binding.mismatch(ref.meta.get("binding")):
            raise CheckpointMismatch(
                f"checkpoint {ref.uri} is from another run: {reason}; restoring it would skip "
                f"or repeat records, so nothing was scored. Use another --checkpoints folder or "
                f"--group, or delete the folder of group {self.group} in the store to start "
                "afresh")
        CHECKPOINT_LAST_SUCCESS.labels(task=ref.task).set(ref.created_at / 1000)
        state = pickle.loads(data)  # authenticated above, never bytes anyone could write
        if state.get("format") != STATE_FORMAT:
            log.warning("checkpoint %s has state format %s, expected %s; starting fresh",
                        ref.uri, state.get("format"), STATE_FORMAT)
            return Task(partition, self.scorer_factory())
        return Task(partition, state["scorer"], dict(state["offsets"]), restored_from=ref)

    # -- checkpoints ----------------------------------------------------------------------------

    def due(self, task: Task, every_records: int, every_s: float) -> bool:
        return task.uncheckpointed >= every_records or (
            task.uncheckpointed > 0 and time.monotonic() - task.last_checkpoint >= every_s)

    def checkpoint(self, consumer: KafkaConsumer, task: Task,
                   commit: bool = True) -> CheckpointRef | None:
        """Steps 1-4 of the module docstring, in that order (4 only when ``commit``)."""
        if task.uncheckpointed == 0:  # nothing new since the last one (or since a fresh start)
            return task.restored_from
        self.producer.flush()  # 1. alerts before the state that produced them
        data = pickle.dumps({"format": STATE_FORMAT, "scorer": task.scorer,
                             "offsets": task.offsets}, protocol=pickle.HIGHEST_PROTOCOL)
        meta = {"partition": task.partition, "offsets": dict(sorted(task.offsets.items())),
                "events": task.scorer.events, "state_format": STATE_FORMAT,
                "binding": self.binding.to_meta()}
        ref = self.store.save(self.group, task.name, data, meta)  # 2. atomic write
        record = orjson.dumps(ref.to_record(), option=orjson.OPT_SORT_KEYS)
        self.producer.send(self.settings.topics.checkpoints, value=record,
                           key=f"{self.group}/{task.name}".encode())
        self.producer.flush()  # 3. the digest is published
        commits = {TopicPartition(topic, task.partition): OffsetAndMetadata(offset, None, -1)
                   for topic, offset in task.offsets.items()}
        if commits and commit:
            try:
                consumer.commit(commits)  # 4. offsets last
            except KafkaError as exc:  # the broker is away: the checkpoint holds the offsets
                log.warning("task %s: committing offsets failed (%s); the checkpoint holds "
                            "them and the next checkpoint commits", task.name, exc)
        CHECKPOINT_LAST_SUCCESS.labels(task=task.name).set(time.time())
        CHECKPOINT_SIZE.observe(len(data))
        self.store.prune(self.group, task.name, keep=self.keep)
        task.restored_from = ref
        task.uncheckpointed = 0
        task.last_checkpoint = time.monotonic()
        self.checkpoints_written += 1
        return ref

    def checkpoint_all(self, consumer: KafkaConsumer) -> None:
        for task in list(self.tasks.values()):
            self.checkpoint(consumer, task)

    def metrics(self) -> dict[str, Any]:
        return {"tasks": len(self.tasks), "checkpoints_written": self.checkpoints_written}
