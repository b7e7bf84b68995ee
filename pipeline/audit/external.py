"""Holding a log to heads kept outside it: what catches a rolled-back or unsealed file.

Everything inside the file can be rolled back together by whoever can write it: drop the
last batches (their leaves, nodes, heads and offsets) and the seal, and what is left is a
log that verifies. Only a signed head kept elsewhere can tell. The auditor publishes every
head it signs to ``chainwatch.audit``, and so does a person who saves ``chainwatch audit
head``; :func:`check_external` then asks of the store, for each such head:

* it is signed by the log's key (an unsigned claim proves nothing, either way);
* the store has at least the head's ``size`` leaves (otherwise: a *rollback*), and its tree
  at that size has the head's root (otherwise the log was rewritten);
* if it is a *seal head* for the store's current size, the file carries a seal.

Seal heads
    When the writer seals the file it also signs a head of the same size and root whose
    ``prev`` is the hash of the stored head of that size (:meth:`AuditLog.seal
    <pipeline.audit.store.AuditLog.seal>`), and the auditor publishes it. No batch head
    has that shape (a batch head's ``prev`` is a head of fewer leaves), so a seal head says
    "this file was sealed at this size": a file at that size with no valid seal had its
    seal removed. It is not stored in the file (storing it would change the sealed bytes).

:func:`parse_head` reads a head given by a person; :func:`newest_published_head` reads the
newest valid head from the topic, giving up after a few seconds when no broker answers.
"""

from __future__ import annotations

import binascii
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from kafka import TopicPartition
from kafka.errors import KafkaError

from pipeline import clients
from pipeline.audit.errors import AuditError
from pipeline.audit.merkle import EMPTY_ROOT
from pipeline.audit.signing import SignedHead, verify_head
from pipeline.errors import BrokerError
from pipeline.settings import Settings

NO_EXTERNAL_HEAD = ("no external head to check against: a rollback to an earlier state "
                    "would not be detected; pass --head or --bootstrap")


@dataclass
class WalkFacts:
    """What verification noted on its walk for :func:`check_external`."""

    roots: dict[int, bytes] = field(default_factory=lambda: {0: EMPTY_ROOT})
    """The rebuilt root at each size an external head names."""
    head_sizes: dict[bytes, int] = field(default_factory=dict)
    """The hash of each stored head that verified -> its size."""


@dataclass(frozen=True, slots=True)
class ExternalCheck:
    problem: str = ""
    """Why the store fails the external heads ("" if it does not)."""
    seal_required: str = ""
    """Why the file must carry a seal ("" if no seal head says so)."""
    checked: str = NO_EXTERNAL_HEAD
    """What was checked, for the report."""


def check_external(size: int, facts: WalkFacts, heads: Sequence[SignedHead],
                   key: Ed25519PublicKey) -> ExternalCheck:
    """Hold a store of ``size`` verified leaves to ``heads``; see the module docstring."""
    if not heads:
        return ExternalCheck()
    seal_required = ""
    for head in heads:
        signed = f"signed at {head.timestamp_ms} ms for {head.size} leaves"
        at = f"the external head {signed}"
        if not verify_head(key, head):
            return ExternalCheck(problem=f"{at} is not signed by the given key (or is "
                                 "malformed): give a head this log's auditor published")
        if head.size > size:
            return ExternalCheck(problem=f"rollback: store has {size} leaves, head signed "
                                 f"for {head.size} (external head {signed}): leaves were "
                                 "removed from its end")
        root = facts.roots.get(head.size)
        if root != head.root:
            return ExternalCheck(problem=f"{at} has root {head.root.hex()}, the store's tree "
                                 f"at that size {root.hex() if root else '-'}: the log was "
                                 "rewritten")
        if facts.head_sizes.get(head.prev) == head.size and head.size == size:
            seal_required = f"the external seal head {signed} says it was sealed then"
    newest = max(heads, key=lambda h: (h.timestamp_ms, h.size))
    return ExternalCheck(seal_required=seal_required,
                         checked=f"consistent with the external head of {newest.size} leaves "
                         f"signed at {newest.timestamp_ms} ms")


def parse_head(value: str) -> SignedHead:
    """A signed head given by a person: a file holding its JSON (as the auditor publishes it
    and ``chainwatch audit head`` prints it) or its bytes, or that JSON or hex as text;
    AuditError saying what was expected otherwise."""
    given = value.strip()
    if given.startswith("{") or (given and all(c in "0123456789abcdefABCDEF" for c in given)):
        data = given.encode()
    else:
        try:
            data = Path(value).read_bytes()
        except OSError as exc:
            raise AuditError(f"--head {value!r} is not a signed head, nor a file holding one "
                             f"({exc.strerror}); give the JSON that `chainwatch audit head` "
                             "prints (or a file of it), or its hex") from exc
    text = data.strip()
    try:
        if text.startswith(b"{"):
            return SignedHead.from_json(text)
        try:
            return SignedHead.from_bytes(binascii.unhexlify(text))
        except (binascii.Error, ValueError):
            return SignedHead.from_bytes(data)
    except AuditError as exc:
        raise AuditError(f"--head {value[:80]!r} is not a signed head ({exc}); give the JSON "
                         "that `chainwatch audit head` prints (or a file of it), or its hex") \
            from exc


def newest_published_head(settings: Settings, key: Ed25519PublicKey,
                          timeout_s: float = 3.0) -> tuple[SignedHead | None, str]:
    """The newest head on the audit topic that ``key`` signed (None if none), and what kept
    it from being the topic's newest ("" if nothing did: read to the end). Reads for at
    most about ``timeout_s`` seconds, broker or none."""
    topic = settings.topics.audit
    deadline = time.monotonic() + timeout_s
    try:
        consumer = clients.consumer(settings, enable_auto_commit=False,
                                    bootstrap_timeout_ms=int(timeout_s * 1000))
    except BrokerError as exc:
        return None, str(exc)
    newest: SignedHead | None = None
    try:
        found = clients.partitions_for(consumer, topic, timeout_s)
        if not found:
            return None, f"the topic {topic} does not exist on {settings.bootstrap_servers}"
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        caught_up = False
        while not caught_up and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    head = _published(record.value, key)
                    if head is not None and (newest is None or (head.timestamp_ms, head.size)
                                             >= (newest.timestamp_ms, newest.size)):
                        newest = head
            caught_up = not batch and clients.caught_up(consumer)
    except KafkaError as exc:
        return newest, f"reading {topic} failed ({type(exc).__name__})"
    finally:
        consumer.close()
    if not caught_up:
        return newest, f"{topic} was not read to its end within {timeout_s:g} s"
    return newest, "" if newest else f"no head signed by the log's key on {topic}"


def _published(value: bytes | None, key: Ed25519PublicKey) -> SignedHead | None:
    try:
        head = SignedHead.from_json(value or b"")
    except AuditError:
        return None
    return head if verify_head(key, head) else None
