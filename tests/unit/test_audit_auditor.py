"""The auditor's batch step in process (no broker): of two copies of one alert id with
different bytes in one polled batch, the one produced first is logged, however the poll
lists its partitions, and the other goes to the dead-letter topic as a conflict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from consumers.auditor import AuditorService
from pipeline.alerts import Alert
from pipeline.audit import AuditLog, AuditReader, Signer, verify_store
from pipeline.settings import Settings

IDS = 20
SIGNER = Signer.generate()


class Letters:
    """Stands in for the DeadLetterWriter: keeps what it is given."""

    def __init__(self) -> None:
        self.letters: list[tuple[bytes, str, dict[str, Any]]] = []

    @property
    def count(self) -> int:
        return len(self.letters)

    def write(self, original: bytes, reason: str, detail: str, source: dict[str, Any]) -> None:
        self.letters.append((original, reason, source))

    def write_error(self, original: bytes, error: Exception, source: dict[str, Any]) -> None:
        self.letters.append((original, type(error).__name__, source))


class Heads:
    """Stands in for the producer the auditor publishes heads with."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, topic: str, value: bytes, key: bytes) -> None:
        self.sent.append(value)

    def flush(self) -> None:
        pass


def _alert(i: int) -> bytes:
    return Alert.build(type="rug_pull", severity="high", score=0.9, subject=f"0x{i:040x}",
                       detector="liquidity_drain", model_version="1", evidence={"drop": 0.95},
                       source={"topic": "chain.dex", "partition": 0, "offset": i,
                               "item_ids": [f"log_{i}"]}, event_time=i, detected_at=i).to_json()


def _altered(raw: bytes) -> bytes:
    """The same alert id with other bytes (a re-send that changed its score)."""
    obj = json.loads(raw)
    obj["score"] = 0.5
    return json.dumps(obj).encode()


def _record(topic: str, partition: int, offset: int, timestamp: int,
            value: bytes) -> ConsumerRecord:
    return ConsumerRecord(topic, partition, -1, offset, timestamp, 0, None, value, [], None,
                          -1, len(value), -1)


def _batch(topic: str, partitions_first: tuple[int, int]) -> dict[TopicPartition, list[Any]]:
    """Each id twice: the original first (timestamp 2i), the altered copy just after (2i+1),
    on the other partition; which partition holds the original alternates by id."""
    runs: dict[int, list[ConsumerRecord]] = {0: [], 1: []}
    for i in range(IDS):
        original, copy = _alert(i), _altered(_alert(i))
        home = i % 2
        runs[home].append(_record(topic, home, len(runs[home]), 1000 + 2 * i, original))
        runs[1 - home].append(_record(topic, 1 - home, len(runs[1 - home]), 1001 + 2 * i, copy))
    return {TopicPartition(topic, p): runs[p] for p in partitions_first}


@pytest.mark.parametrize("order", [(0, 1), (1, 0)], ids=["p0-first", "p1-first"])
def test_the_copy_produced_first_is_logged_whatever_the_partition_order(
        tmp_path: Path, order: tuple[int, int]) -> None:
    settings = Settings()
    service = AuditorService(settings)
    letters, heads = Letters(), Heads()
    path = tmp_path / "audit.db"
    with AuditLog.open(path, SIGNER) as audit:
        batch = _batch(settings.topics.alerts, order)
        service._append(batch, audit, heads, letters)  # type: ignore[arg-type]
    with AuditReader.open(path) as reader:
        logged = [reader.leaf(i).payload for i in range(reader.size)]
    assert len(logged) == IDS
    assert sorted(logged) == sorted(json.dumps(json.loads(_alert(i)), sort_keys=True,
                                               separators=(",", ":")).encode()
                                    for i in range(IDS))
    assert [reason for _, reason, _ in letters.letters] == ["audit_conflict"] * IDS
    assert sorted(original for original, _, _ in letters.letters) == \
        sorted(_altered(_alert(i)) for i in range(IDS))
    assert (service.stats.appended, service.stats.duplicates, service.stats.conflicts) == \
        (IDS, IDS, IDS)
    assert verify_store(path, public_key=SIGNER.public_key).ok


def test_an_identical_resend_in_one_batch_is_a_plain_duplicate(tmp_path: Path) -> None:
    settings = Settings()
    service = AuditorService(settings)
    letters, heads = Letters(), Heads()
    topic = settings.topics.alerts
    batch = {TopicPartition(topic, 1): [_record(topic, 1, 0, 5, _alert(7))],
             TopicPartition(topic, 0): [_record(topic, 0, 0, 5, _alert(7))]}
    with AuditLog.open(tmp_path / "audit.db", SIGNER) as audit:
        service._append(batch, audit, heads, letters)  # type: ignore[arg-type]
        assert audit.size == 1 and audit.offsets() == {(topic, 0): 1, (topic, 1): 1}
    assert letters.letters == [] and service.stats.duplicates == 1
    assert len(heads.sent) == 1
