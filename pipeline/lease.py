"""An exclusive lease through a Kafka consumer group: one holder at a time, across hosts.

Every candidate joins one consumer group, subscribed to one topic, and holds the lease
while the group assigns it partition 0 of that topic. Kafka's group protocol does the rest:
a member that stops heartbeating (killed, cut off) is out of the group after the session
timeout and the partition moves to another member; one that closes cleanly hands it over at
once. The group uses its own assignor (:class:`LeaseAssignor`, cooperative): the partition
stays with the member that holds it as long as that member is in the group, so a candidate
that joins or leaves neither takes the lease from its holder nor makes it give the lease up
for a moment (a rebalance only pauses :meth:`Lease.confirm` until it completes).

The candidate's consumer lives in its own thread, which polls it without pause (a member
that does not poll cannot complete a rebalance), and no other thread touches it
(kafka-python clients are not thread-safe). The partition is paused: nothing is fetched; the
assignment is the lease.

Being assigned the partition is not enough to write safely. A holder that was paused for
longer than the session (SIGSTOP, a stalled VM, a long swap) does not know yet that another
member holds the lease now: its rebalance callback runs only once a heartbeat is answered.
So before each write that must be exclusive the holder calls :meth:`Lease.confirm`: it
commits an offset for partition 0 with the member's generation, which the group coordinator
refuses from a member that is not in the current generation (Apache Kafka and Tansu alike),
and then checks that no revocation came in between. :meth:`Lease.exclusive` does both and
makes a revocation wait for a write that was confirmed and is committing, so that once the
revocation callback has returned, this member writes nothing more under the lease.

>>> LeaseConfig(group="g", topic="t").session_timeout_ms
10000
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.coordinator.assignors.abstract import (
    AbstractPartitionAssignor,
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
    RebalanceProtocol,
)
from kafka.errors import KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata

from pipeline import clients
from pipeline.settings import Settings

log = logging.getLogger(__name__)

POLL_MS = 50
"""How long the lease thread's poll waits; also the most a :meth:`Lease.confirm` waits for
the thread to pick it up."""


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    """Which lease (``group``, ``topic``), and how soon a silent holder loses it."""

    group: str
    topic: str
    session_timeout_ms: int = 10_000
    """A holder silent for this long loses the lease (then a rebalance moves it)."""
    holder: str = ""
    """Who this candidate is, for people: committed as the offset's metadata."""

    @property
    def heartbeat_interval_ms(self) -> int:
        return max(self.session_timeout_ms // 3, 100)


class Lease:
    """One candidate for the lease; :meth:`start` it, :meth:`close` it when done.

    Any thread may read :attr:`held`, call :meth:`wait`, :meth:`confirm` and
    :meth:`exclusive`.
    """

    def __init__(self, settings: Settings, config: LeaseConfig) -> None:
        self.settings = settings
        self.config = config
        self.partition = TopicPartition(config.topic, 0)
        self._held = threading.Event()
        self._changed = threading.Condition()
        self._writing = threading.Lock()  # held from a confirmed write until it is done
        self._requests: queue.SimpleQueue[_Confirm] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: KafkaConsumer | None = None
        self.failure: BaseException | None = None
        """What stopped the lease thread, if anything did (then the lease is not held)."""
        self.terms = 0
        """How many times this candidate was assigned the lease."""
        self.generation = -1
        """The group generation in which this candidate was last assigned the lease."""
        self._assigned_generation = -1  # of the assignment being completed (LeaseAssignor)
        self.joined = False
        """Whether this candidate has been through a rebalance: with :attr:`held` False, another
        member holds the lease (or nobody does, for the moment)."""

    def __repr__(self) -> str:
        return (f"Lease(group={self.config.group!r}, topic={self.config.topic!r}, "
                f"held={self.held})")

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> Lease:
        """Join the group (in the background); BrokerError if Kafka cannot be reached."""
        if self._thread is not None:
            return self
        cfg = self.config
        self._consumer = clients.consumer(
            self.settings, group_id=cfg.group, enable_auto_commit=False,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            partition_assignment_strategy=[LeaseAssignor(self)])
        self._consumer.subscribe([cfg.topic], listener=_Listener(self))
        self._thread = threading.Thread(target=self._run, name="chainwatch-lease",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Leave the group, handing the lease over at once if this candidate holds it."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=self.config.session_timeout_ms / 1000 + 30)
        self._thread = None

    def __enter__(self) -> Lease:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- asking --------------------------------------------------------------------------

    @property
    def held(self) -> bool:
        """Whether the group assigned this candidate the lease (as far as it knows now)."""
        return self._held.is_set()

    def wait(self, held: bool, timeout_s: float) -> bool:
        """Wait until :attr:`held` is ``held`` (or ``timeout_s`` passes); whether it is."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self.held != held:
                left = deadline - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    break
        return self.held == held

    def confirm(self, timeout_s: float | None = None) -> bool:
        """Whether the group coordinator says this candidate holds the lease now: one
        offset commit with its generation, done by the lease thread. False on any doubt
        (revoked, refused, a rebalance in progress, no answer within ``timeout_s``: default
        a third of the session). A write uses :meth:`exclusive` instead."""
        return self._ask(timeout_s) == _OK

    @contextlib.contextmanager
    def exclusive(self, wait_s: float | None = None) -> Iterator[bool]:
        """``with lease.exclusive() as ok:`` around a write's commit: ``ok`` when the
        coordinator confirmed the lease and no revocation came since. A rebalance in
        progress (a candidate joining) is waited out, up to ``wait_s`` (default: the
        session timeout), since the holder keeps the lease through it; a refusal is a no at
        once. A revocation that comes while the block runs waits until it ends, so keep it
        short (a commit, not a computation: the lease thread, heartbeats included, waits)."""
        deadline = time.monotonic() + (self.config.session_timeout_ms / 1000
                                       if wait_s is None else wait_s)
        while (answer := self._ask(None)) == _REBALANCING and self.held and \
                time.monotonic() < deadline:
            time.sleep(POLL_MS / 1000)
        if answer != _OK:
            yield False
            return
        with self._writing:
            yield self.held

    def _ask(self, timeout_s: float | None) -> str:
        if not self.held or self._thread is None:
            return _REFUSED
        timeout = self.config.session_timeout_ms / 3000 if timeout_s is None else timeout_s
        request = _Confirm()
        self._requests.put(request)
        if not request.done.wait(timeout):
            request.abandoned = True
            log.warning("lease %s: the coordinator did not confirm it within %.1f s",
                        self.config.group, timeout)
            return _REFUSED
        return request.answer if self.held else _REFUSED

    # -- the lease thread ------------------------------------------------------------------

    def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            while not self._stop.is_set():
                try:
                    consumer.poll(timeout_ms=POLL_MS)
                except KafkaError as exc:  # the coordinator moved, a rebalance failed: retry
                    log.info("lease %s: poll failed (%s: %s); retrying", self.config.group,
                             type(exc).__name__, exc)
                    time.sleep(POLL_MS / 1000)
                if self.partition in consumer.assignment() and \
                        self.partition not in consumer.paused():
                    consumer.pause(self.partition)
                self._serve(consumer)
        except BaseException as exc:  # kept for the owner; the lease is not held
            self.failure = exc
            log.exception("lease %s: the lease thread stopped", self.config.group)
        finally:
            self._set_held(False)
            self._answer_all()
            _close_without_leaving(consumer)

    def _serve(self, consumer: KafkaConsumer) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if request.abandoned:
                continue
            request.answer = self._commit(consumer)
            request.done.set()

    def _commit(self, consumer: KafkaConsumer) -> str:
        if not self.held:
            return _REFUSED
        timeout_ms = max(self.config.session_timeout_ms // 3, 500)
        try:
            consumer.commit({self.partition: OffsetAndMetadata(0, self.config.holder[:200], -1)},
                            timeout_ms=timeout_ms)
        except RebalanceInProgressError:
            return _REBALANCING
        except KafkaError as exc:
            if isinstance(exc.args[0] if exc.args else None, RebalanceInProgressError):
                return _REBALANCING
            log.warning("lease %s: the coordinator refused this member (%s: %s)",
                        self.config.group, type(exc).__name__, exc)
            return _REFUSED
        return _OK

    def _answer_all(self) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            request.answer = _REFUSED
            request.done.set()

    def _set_held(self, held: bool) -> None:
        if not held:
            with self._writing:  # a confirmed write that is committing finishes first
                self._held.clear()
        else:
            self._held.set()
            self.terms += 1
        with self._changed:
            self._changed.notify_all()

    def _assigned(self, partitions: set[TopicPartition]) -> None:
        if self.partition in partitions and not self.held:
            self.generation = self._assigned_generation
            log.info("lease %s: this member holds it now (generation %d)", self.config.group,
                     self.generation)
            self._set_held(True)

    def _revoked(self, partitions: set[TopicPartition], lost: bool) -> None:
        if self.partition in partitions and self.held:
            log.warning("lease %s: %s", self.config.group,
                        "lost (this member was out of the group)" if lost else "revoked")
            self._set_held(False)


def _close_without_leaving(consumer: KafkaConsumer) -> None:
    """Close ``consumer`` without a LeaveGroup request: the group then drops the member
    after the session timeout, as if it had died, and the lease moves on.

    Why not leave: on Tansu 0.6.0 a group whose leader sends LeaveGroup while another member
    is joining names the departed member as leader in every later JoinGroup response, so no
    member ever gets an assignment again, until the broker restarts
    (tests/integration/test_lease.py shows the defect). A member that goes silent instead is
    expired properly. On Apache Kafka leaving would hand the lease over at once; not leaving
    costs a session timeout there.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None:  # kafka-python's coordinator leaves in close(); stay instead
        coordinator.maybe_leave_group = lambda *args, **kwargs: None
    try:
        consumer.close(autocommit=False)  # revokes (on_partitions_revoked) on its way out
    except Exception:  # closing is best effort
        log.debug("closing the lease consumer failed", exc_info=True)


_OK, _REBALANCING, _REFUSED = "confirmed", "rebalancing", "refused"


class _Confirm:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer = _REFUSED
        self.abandoned = False


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, lease: Lease) -> None:
        self.lease = lease

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.lease._revoked(set(revoked), lost=False)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.lease._revoked(set(lost), lost=True)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.lease._assigned(set(assigned))


class LeaseAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Partition 0 to the member that holds it, else to one member; nothing else to anyone.

    Each member says in its subscription's user data whether it holds the lease, and since
    which generation (:meth:`metadata`). The group leader keeps the lease with its holder;
    were two to claim it (a member that was out of the group clears its claim before it
    joins again, so this should not happen), the later claim wins. With no holder among the
    members (it died or left), the member with the smallest id gets it. Cooperative: members
    keep what they hold while the group rebalances.
    """

    name = "chainwatch-lease"
    version = 0
    _PREFIX = b"chainwatch-lease-1\n"

    def __init__(self, lease: Lease) -> None:
        self.lease = lease

    def supported_protocols(self) -> list[RebalanceProtocol]:
        return [RebalanceProtocol.COOPERATIVE]

    def metadata(self, topics: set[str]) -> ConsumerProtocolSubscription:
        lease = self.lease
        claim = {"held": lease.held, "generation": lease.generation if lease.held else -1}
        user_data = self._PREFIX + json.dumps(claim, sort_keys=True).encode()
        return ConsumerProtocolSubscription(self.version, sorted(topics), user_data)

    def assign(self, cluster: Any, members: list[Any]) -> dict[str, ConsumerProtocolAssignment]:
        if not members:
            return {}
        topic = self.lease.config.topic
        candidates = [m for m in members if topic in (m.metadata.topics or ())]
        owner = None
        if candidates:
            claims = [(self._claimed(m.metadata.user_data), m.member_id) for m in candidates]
            held = [(generation, member) for generation, member in claims if generation is not None]
            if held:
                owner = min(held, key=lambda c: (-c[0], c[1]))[1]
            else:
                owner = min(member for _, member in claims)
        return {m.member_id: ConsumerProtocolAssignment(
                    self.version, [(topic, [0])] if m.member_id == owner else [], b"")
                for m in members}

    def on_assignment(self, assignment: ConsumerProtocolAssignment, generation: int) -> None:
        self.lease._assigned_generation = int(generation)
        self.lease.joined = True

    @classmethod
    def _claimed(cls, user_data: bytes | None) -> int | None:
        """The generation since which a member holds the lease, or None if it does not."""
        if not user_data or not user_data.startswith(cls._PREFIX):
            return None
        try:
            claim = json.loads(user_data[len(cls._PREFIX):])
        except ValueError:
            return None
        if not isinstance(claim, dict) or claim.get("held") is not True:
            return None
        generation = claim.get("generation")
        return generation if type(generation) is int else -1
