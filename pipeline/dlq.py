"""The dead-letter queue: bad input is kept, with its reason and where it came from.

A dead letter is a JSON object on ``chainwatch.dlq``::

    {"reason": "bad_value", "detail": "field 'value': must not be negative (got '-1')",
     "stage": "scorer", "source": {"topic": "chain.transactions", "partition": 2,
     "offset": 1041}, "original_b64": "eyJoYXNoIjo…", "failed_at": 1700000000.0}

``original_b64`` is the record's exact original bytes, so nothing is lost and a fixed record
can be replayed. ``source`` is ``{topic, partition, offset}`` for Kafka input and
``{file, line}`` for file input.
"""

from __future__ import annotations

import base64
import time
from typing import Any, Protocol

import orjson

from pipeline.errors import RecordError
from pipeline.metrics import DLQ_RECORDS


class _Sender(Protocol):
    def send(self, topic: str, value: bytes | None = ..., key: bytes | None = ...) -> Any: ...


class DeadLetterWriter:
    """Writes bad records to the dead-letter topic and counts them by reason."""

    def __init__(self, producer: _Sender, topic: str, stage: str) -> None:
        self._producer = producer
        self._topic = topic
        self._stage = stage
        self.count = 0

    def write(self, original: bytes, reason: str, detail: str, source: dict[str, Any]) -> None:
        letter = {
            "reason": reason,
            "detail": detail,
            "stage": self._stage,
            "source": source,
            "original_b64": base64.b64encode(original).decode("ascii"),
            "failed_at": time.time(),
        }
        key = orjson.dumps(source, option=orjson.OPT_SORT_KEYS)
        self._producer.send(self._topic, value=orjson.dumps(letter), key=key)
        DLQ_RECORDS.labels(reason=reason, stage=self._stage).inc()
        self.count += 1

    def write_error(self, original: bytes, error: RecordError, source: dict[str, Any]) -> None:
        self.write(original, error.code, str(error), source)


def decode_letter(value: bytes) -> dict[str, Any]:
    """A dead letter as a dict, with ``original`` restored to bytes."""
    letter: dict[str, Any] = orjson.loads(value)
    letter["original"] = base64.b64decode(letter["original_b64"])
    return letter
