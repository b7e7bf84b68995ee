"""Dead letters always fit in a Kafka message, and writing one never stops a service."""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from kafka.future import Future
from prometheus_client import REGISTRY

from pipeline import codec
from pipeline.dlq import (
    MAX_DETAIL_CHARS,
    MAX_INLINE_ORIGINAL,
    TRUNCATED_HEAD_BYTES,
    DeadLetterWriter,
    decode_letter,
)
from pipeline.errors import RecordError
from pipeline.settings import Settings

SOURCE = {"topic": "chain.transactions", "partition": 2, "offset": 1041}
KAFKA_MAX_REQUEST = 1_048_576  # kafka-python's default max_request_size


class Recorder:
    """A producer that keeps what it is given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        assert value is not None and key is not None
        self.sent.append((topic, value, key))
        return None


class Refusing:
    """A producer whose send raises, as kafka-python's does for an oversized record."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        raise self.exc


class Deferred:
    """A producer whose sends resolve later, like kafka-python's futures."""

    def __init__(self) -> None:
        self.futures: list[Future] = []

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        future = Future()
        self.futures.append(future)
        return future


def _failures(stage: str) -> float:
    return REGISTRY.get_sample_value("chainwatch_dlq_write_failures_total",
                                     {"stage": stage}) or 0.0


def test_a_small_original_is_kept_whole_with_its_digest_and_size() -> None:
    out = Recorder()
    original = b'{"type": "transaction", "nonce": -1}'
    DeadLetterWriter(out, "dlq", stage="scorer").write(original, "bad_value", "why", SOURCE)
    (topic, value, key), = out.sent
    letter = decode_letter(value)
    assert topic == "dlq" and orjson.loads(key) == SOURCE
    assert letter["original"] == original and letter["original_truncated"] is False
    assert letter["original_size"] == len(original)
    assert letter["original_sha256"] == hashlib.sha256(original).hexdigest()
    assert (letter["reason"], letter["detail"], letter["stage"], letter["source"]) == (
        "bad_value", "why", "scorer", SOURCE)


def test_an_original_at_the_inline_limit_is_still_whole() -> None:
    out = Recorder()
    original = b"a" * MAX_INLINE_ORIGINAL
    DeadLetterWriter(out, "dlq", stage="scorer").write(original, "not_json", "x", SOURCE)
    assert decode_letter(out.sent[0][1])["original"] == original


@pytest.mark.parametrize("size", [800_000, 1_500_000, 5_000_000])
def test_a_large_original_is_kept_by_reference_far_below_the_message_limit(size: int) -> None:
    out = Recorder()
    original = bytes(range(256)) * (size // 256)
    DeadLetterWriter(out, "dlq", stage="scorer").write(original, "oversized", "big", SOURCE)
    value = out.sent[0][1]
    assert len(value) < 16 * 1024 < KAFKA_MAX_REQUEST
    letter = decode_letter(value)
    assert letter["original_truncated"] is True
    assert letter["original"] == original[:TRUNCATED_HEAD_BYTES]
    assert letter["original_size"] == len(original)
    assert letter["original_sha256"] == hashlib.sha256(original).hexdigest()
    assert letter["source"] == SOURCE  # where the whole record still is


def test_detail_is_bounded() -> None:
    out = Recorder()
    DeadLetterWriter(out, "dlq", stage="scorer").write(b"x", "processing_error",
                                                       "y" * 2_000_000, SOURCE)
    detail = decode_letter(out.sent[0][1])["detail"]
    assert len(detail) == MAX_DETAIL_CHARS and detail.endswith("...")


def test_an_error_quoting_a_huge_value_gives_a_small_letter() -> None:
    out = Recorder()
    raw = orjson.dumps({"type": "x" * 900_000})
    with pytest.raises(RecordError) as caught:
        codec.decode(raw)
    DeadLetterWriter(out, "dlq", stage="scorer").write_error(raw, caught.value, SOURCE)
    assert len(out.sent[0][1]) < 16 * 1024


@pytest.mark.parametrize("exc", [MessageSizeTooLargeError("too large"),
                                 KafkaTimeoutError("no metadata"), RuntimeError("closed")])
def test_a_refused_send_is_logged_counted_and_does_not_raise(
        exc: Exception, caplog: pytest.LogCaptureFixture) -> None:
    before = _failures("refused-test")
    dlq = DeadLetterWriter(Refusing(exc), "dlq", stage="refused-test")
    with caplog.at_level(logging.ERROR, logger="pipeline.dlq"):
        dlq.write(b"x", "not_json", "bad", SOURCE)
        dlq.write(b"y", "not_json", "bad", SOURCE)
    assert (dlq.count, dlq.failures) == (2, 2)
    assert _failures("refused-test") == before + 2
    assert len(caplog.records) == 2
    assert all("\n" not in r.getMessage() and r.exc_info is None for r in caplog.records)
    assert type(exc).__name__ in caplog.records[0].getMessage()


def test_a_delivery_that_fails_later_is_counted_and_does_not_raise(
        caplog: pytest.LogCaptureFixture) -> None:
    before = _failures("deferred-test")
    out = Deferred()
    dlq = DeadLetterWriter(out, "dlq", stage="deferred-test")
    dlq.write(b"x", "not_json", "bad", SOURCE)
    dlq.write(b"y", "not_json", "bad", SOURCE)
    with caplog.at_level(logging.ERROR, logger="pipeline.dlq"):
        out.futures[0].failure(MessageSizeTooLargeError("broker refused it"))
        out.futures[1].success(None)
    assert (dlq.count, dlq.failures) == (2, 1)
    assert _failures("deferred-test") == before + 1
    assert len(caplog.records) == 1 and "MessageSizeTooLargeError" in caplog.text


def test_letters_of_the_older_format_still_decode() -> None:
    old = orjson.dumps({"reason": "not_json", "detail": "d", "stage": "scorer",
                        "source": SOURCE, "original_b64": base64.b64encode(b"abc").decode(),
                        "failed_at": 1.0})
    letter = decode_letter(old)
    assert letter["original"] == b"abc" and letter["original_truncated"] is False
    assert letter["original_size"] == 3
    assert letter["original_sha256"] == hashlib.sha256(b"abc").hexdigest()


# -- the scorer's message loop (Kafka-free: fakes for the task, messages and producer) ------


@dataclass
class _Message:
    value: bytes
    offset: int
    timestamp: int = 0


class _Task:
    """A task whose scoring raises, as a bug in a detector would."""

    def __init__(self) -> None:
        self.advanced: list[int] = []
        self.scorer = self

    def process(self, record: Any, source: dict[str, Any]) -> list[Any]:
        raise ValueError("math domain error")

    def advance(self, topic: str, offset: int) -> None:
        self.advanced.append(offset)

    def replaying(self, topic: str, offset: int) -> bool:
        return False  # a fresh task: every record's output is new


def _score(dlq: DeadLetterWriter, messages: list[_Message]) -> _Task:
    from consumers.scorer import ScorerService

    settings = Settings.load(env={})
    service = ScorerService(settings)
    task = _Task()
    tp = TopicPartition(settings.topics.transactions, 0)
    service._score_messages(task, tp, messages, Recorder(), dlq)  # type: ignore[arg-type]
    return task


def _valid_transaction(i: int) -> bytes:
    return orjson.dumps({"type": "transaction", "hash": f"0x{i:064x}", "nonce": 0,
                         "block_number": i, "block_timestamp": 12 * i, "transaction_index": 0,
                         "from_address": "0x" + "11" * 20, "to_address": None, "value": "1",
                         "gas": 21000, "gas_price": "1"})


def test_the_scorer_logs_one_traceback_per_kind_of_failure_and_dead_letters_each(
        caplog: pytest.LogCaptureFixture) -> None:
    out = Recorder()
    dlq = DeadLetterWriter(out, "dlq", stage="scorer")
    with caplog.at_level(logging.ERROR, logger="consumers.scorer"):
        task = _score(dlq, [_Message(_valid_transaction(i), i) for i in range(5)])
    assert task.advanced == [0, 1, 2, 3, 4]
    assert [decode_letter(v)["reason"] for _, v, _ in out.sent] == ["processing_error"] * 5
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and len(caplog.records) == 5
    assert all("math domain error" in r.getMessage() for r in caplog.records[1:])


def test_the_scorer_goes_on_when_no_dead_letter_can_be_written() -> None:
    dlq = DeadLetterWriter(Refusing(MessageSizeTooLargeError("too large")), "dlq", "scorer")
    messages = [_Message(b"{" + b"x" * 1_500_000, 0), _Message(b"not json", 1),
                _Message(_valid_transaction(7), 2)]
    task = _score(dlq, messages)
    assert task.advanced == [0, 1, 2]
    assert (dlq.count, dlq.failures) == (3, 3)
