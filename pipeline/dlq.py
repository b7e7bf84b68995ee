"""The dead-letter queue: bad input is kept, with its reason and where it came from.

A dead letter is a JSON object on ``chainwatch.dlq``::

    {"reason": "bad_value", "detail": "field 'value': must not be negative (got '-1')",
     "stage": "scorer", "source": {"topic": "chain.transactions", "partition": 2,
     "offset": 1041}, "original_b64": "eyJoYXNoIjo…", "original_size": 412,
     "original_sha256": "9f86d0…", "original_truncated": false, "failed_at": 1700000000.0}

``source`` is ``{topic, partition, offset}`` for Kafka input and ``{file, line}`` for file
input. ``original_size`` and ``original_sha256`` are those of the record's exact original
bytes. An original of up to :data:`MAX_INLINE_ORIGINAL` bytes is kept whole in
``original_b64``, so a fixed record can be replayed from the letter. A larger one is kept by
reference: ``original_truncated`` is true, ``original_b64`` holds only its first
:data:`TRUNCATED_HEAD_BYTES` bytes, and the whole record stays where ``source`` says (the
input topic or file), identified there by its digest and size. ``detail`` is cut to
:data:`MAX_DETAIL_CHARS` characters. A letter is therefore always far below Kafka's 1 MB
message limit, whatever the record. (Letters written before these fields existed have only
``original_b64``; :func:`decode_letter` reads both.)

Writing a letter never raises into the service that writes it: a send refused at once (the
producer closed, a broker unreachable) or failed later, when the producer delivers it, is
logged in one line and counted in ``chainwatch_dlq_write_failures_total``; the service goes
on with the next record.

>>> class Recorder:
...     def __init__(self): self.sent = []
...     def send(self, topic, value=None, key=None): self.sent.append(value)
>>> out = Recorder()
>>> dlq = DeadLetterWriter(out, "chainwatch.dlq", stage="scorer")
>>> dlq.write(b"x" * 100_000, "oversized", "too big", {"topic": "t", "partition": 0,
...           "offset": 7})
>>> letter = decode_letter(out.sent[0])
>>> letter["original_truncated"], letter["original_size"], len(letter["original"])
(True, 100000, 4096)
>>> len(out.sent[0]) < 10_000
True
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from typing import Any, Protocol

import orjson

from pipeline.errors import RecordError
from pipeline.metrics import DLQ_RECORDS, DLQ_WRITE_FAILURES

log = logging.getLogger(__name__)

MAX_INLINE_ORIGINAL = 64 * 1024
"""Originals up to this many bytes are kept whole in the letter."""
TRUNCATED_HEAD_BYTES = 4 * 1024
"""Of a larger original, the letter keeps this many first bytes (and its digest and size)."""
MAX_DETAIL_CHARS = 1024
"""``detail`` is cut to this many characters (an error message may quote a huge value)."""


class _Sender(Protocol):
    def send(self, topic: str, value: bytes | None = ..., key: bytes | None = ...) -> Any: ...


def build_letter(original: bytes, reason: str, detail: str, source: dict[str, Any],
                 stage: str) -> dict[str, Any]:
    """The dead letter of ``original`` as a JSON-ready dict, bounded in size."""
    truncated = len(original) > MAX_INLINE_ORIGINAL
    kept = original[:TRUNCATED_HEAD_BYTES] if truncated else original
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[:MAX_DETAIL_CHARS - 3] + "..."
    return {
        "reason": reason,
        "detail": detail,
        "stage": stage,
        "source": source,
        "original_b64": base64.b64encode(kept).decode("ascii"),
        "original_size": len(original),
        "original_sha256": hashlib.sha256(original).hexdigest(),
        "original_truncated": truncated,
        "failed_at": time.time(),
    }


class DeadLetterWriter:
    """Writes bad records to the dead-letter topic and counts them by reason.

    ``count`` is the letters written (handed to the producer); ``failures`` those whose send
    failed, at once or later on delivery. Neither a failure nor anything else ever raises out
    of :meth:`write`.
    """

    def __init__(self, producer: _Sender, topic: str, stage: str) -> None:
        self._producer = producer
        self._topic = topic
        self._stage = stage
        self._lock = threading.Lock()  # delivery failures are reported on the sender thread
        self.count = 0
        self.failures = 0

    def write(self, original: bytes, reason: str, detail: str, source: dict[str, Any]) -> None:
        """Send the letter of ``original`` (see the module docstring); never raises."""
        self.count += 1
        try:
            letter = build_letter(original, reason, detail, source, self._stage)
            key = orjson.dumps(source, option=orjson.OPT_SORT_KEYS)
            future = self._producer.send(self._topic, value=orjson.dumps(letter), key=key)
        except Exception as exc:  # a dead letter must never stop the service
            self._failed(reason, source, exc)
            return
        DLQ_RECORDS.labels(reason=reason, stage=self._stage).inc()
        add_errback = getattr(future, "add_errback", None)
        if add_errback is not None:  # a Kafka future: delivery may still fail
            add_errback(lambda exc: self._failed(reason, source, exc))

    def write_error(self, original: bytes, error: RecordError, source: dict[str, Any]) -> None:
        self.write(original, error.code, str(error), source)

    def _failed(self, reason: str, source: dict[str, Any], exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
        DLQ_WRITE_FAILURES.labels(stage=self._stage).inc()
        log.error("%s: the dead letter (%s) of the record at %s was not written: %s: %s",
                  self._stage, reason, source, type(exc).__name__, exc)


def decode_letter(value: bytes) -> dict[str, Any]:
    """A dead letter as a dict, with ``original`` restored to bytes.

    ``original`` is the whole record unless ``original_truncated`` is true, when it is the
    record's first bytes (see the module docstring); letters of the older format, without
    size, digest or truncation fields, get them filled in from their whole original.
    """
    letter: dict[str, Any] = orjson.loads(value)
    original = base64.b64decode(letter["original_b64"])
    letter["original"] = original
    letter.setdefault("original_truncated", False)
    if not letter["original_truncated"]:
        letter.setdefault("original_size", len(original))
        letter.setdefault("original_sha256", hashlib.sha256(original).hexdigest())
    return letter
