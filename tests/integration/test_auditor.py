"""The auditor against a real broker: appends once, resumes exactly, and vouches for checkpoints.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from consumers.auditor import AuditorService
from consumers.scorer import ScorerService
from pipeline.audit import AuditReader, SignedHead, verify_head, verify_store
from pipeline.audit.external import newest_published_head
from pipeline.audit.signing import load_public_key
from pipeline.audit.trust import CheckpointTrust
from pipeline.checkpoints import CheckpointStore
from pipeline.dlq import decode_letter
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import CHAINWATCH, cli_env, consume_all
from tests.helpers import produce_chain, send_alerts

pytestmark = pytest.mark.integration


@pytest.fixture
def audited(settings: Settings, tmp_path: Path) -> Settings:
    run = settings.replace(audit__store=str(tmp_path / "audit" / "audit.db"))
    ensure_topics(run)
    return run


def _public_key(settings: Settings) -> Path:
    return Path(settings.audit.store + ".key.pub")


def test_auditor_appends_each_record_once_and_publishes_signed_heads(
        audited: Settings, tmp_path: Path, producer_factory: Callable[..., KafkaProducer],
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    alerts = send_alerts(audited, range(40), producer_factory)
    send_alerts(audited, range(30, 40), producer_factory)  # re-sent after a scorer restart
    with CheckpointStore.from_uri(str(tmp_path / "ckpt")) as store:
        refs = [store.save("g", f"p{p:04d}", b"state %d" % p, {"partition": p})
                for p in range(3)]
    producer = producer_factory()
    for ref in refs:
        producer.send(audited.topics.checkpoints, value=json.dumps(ref.to_record()).encode())
    producer.send(audited.topics.alerts, value=b"{not an alert")
    producer.flush()

    stats = AuditorService(audited).run(input_finished=lambda: True)

    assert (stats.consumed, stats.appended, stats.dead_lettered) == (54, 43, 1)
    assert stats.tree_size == 43
    with AuditReader.open(audited.audit.store) as reader:
        assert all(reader.index_of(a.alert_id) is not None for a in alerts)
        assert all(reader.has_checkpoint(ref.sha256) for ref in refs)
    assert verify_store(audited.audit.store, public_key=_public_key(audited)).ok
    letters = consume_all(consumer_factory(audited.topics.dlq), 1)
    assert [decode_letter(m.value)["reason"] for m in letters] == ["not_json"]
    heads = [SignedHead.from_json(m.value)
             for m in consume_all(consumer_factory(audited.topics.audit), stats.heads_published)]
    assert heads and heads[-1].size == 43
    assert all(verify_head(_public_key(audited), h) for h in heads)

    # a second run resumes from the offsets in the log: nothing re-read, nothing twice
    more = send_alerts(audited, range(40, 45), producer_factory)
    again = AuditorService(audited).run(input_finished=lambda: True)
    assert (again.consumed, again.appended, again.duplicates, again.tree_size) == (5, 5, 0, 48)
    with AuditReader.open(audited.audit.store) as reader:
        assert sorted(reader.index_of(a.alert_id) for a in more) == [43, 44, 45, 46, 47]


def test_a_killed_auditor_restarts_where_the_log_ends(
        audited: Settings, tmp_path: Path,
        producer_factory: Callable[..., KafkaProducer]) -> None:
    alerts = send_alerts(audited, range(30_000), producer_factory)
    env = cli_env(audited) | {"CHAINWATCH_AUDIT_STORE": audited.audit.store}
    first_log = tmp_path / "first.log"
    with first_log.open("w") as err:
        serve = subprocess.Popen([CHAINWATCH, "audit", "serve", "--session-timeout", "2",
                                  "--log-level", "INFO"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60
        size = 0
        while size == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
            if Path(audited.audit.store).exists():
                try:
                    with AuditReader.open(audited.audit.store) as reader:
                        size = reader.size
                except Exception:
                    size = 0
        serve.send_signal(signal.SIGKILL)
    finally:
        serve.wait(timeout=30)
    assert size > 0, f"the auditor appended nothing within a minute:\n{first_log.read_text()}"
    alerts += send_alerts(audited, range(30_000, 31_000), producer_factory)

    # the killed one holds the lease until its session (2 s) expires, then this one takes it
    done = subprocess.run([CHAINWATCH, "audit", "serve", "--until-caught-up", "--json",
                           "--session-timeout", "2", "--log-level", "INFO"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    summary = json.loads(done.stdout)
    assert summary["tree_size"] == len(alerts) == 31_000
    assert summary["duplicates"] == 0  # resumed at the logged offsets, not before them
    with AuditReader.open(audited.audit.store) as reader:
        assert {reader.leaf(i).id for i in range(reader.size)} == {a.alert_id for a in alerts}
    assert verify_store(audited.audit.store, public_key=_public_key(audited)).ok


def test_a_scorer_restores_only_checkpoints_the_log_holds(audited: Settings,
                                                          tmp_path: Path) -> None:
    produce_chain(audited, 5, range(60))
    first = ScorerService(audited, session_timeout_ms=2000, heartbeat_interval_ms=500)
    assert first.run(input_finished=lambda: True).consumed > 0
    assert first.tasks is not None and first.tasks.checkpoints_written > 0
    checking = audited.replace(audit__verify_checkpoints=True)

    # the auditor has not seen the checkpoints yet (no log, no key): refused, said why
    with pytest.raises(Exception, match="no public key"):
        ScorerService(checking).run(input_finished=lambda: True)

    AuditorService(audited).run(input_finished=lambda: True)
    second = ScorerService(checking, session_timeout_ms=2000, heartbeat_interval_ms=500)
    stats = second.run(input_finished=lambda: True)
    assert second.tasks is not None
    assert stats.consumed == 0  # every task restored from its audited checkpoint

    # a checkpoint the log lacks is skipped for the previous one
    with CheckpointStore.from_uri(audited.checkpoint_uri) as store:
        task = store.tasks(audited.consumer_group)[0]
        newest = store.newest(audited.consumer_group, task)
        assert newest is not None
        forged = store.save(audited.consumer_group, task, b"not audited", dict(newest.meta))
        trust = CheckpointTrust.from_settings(checking)
        found = store.load_newest_good(audited.consumer_group, task, trusted=trust)
    assert found is not None and found[0] == newest and forged.seq == newest.seq + 1
    assert not trust(forged.sha256) and "not in the audit log" in trust.last_reason


def _flip_schema(blob: bytearray) -> None:
    """A flipped bit in the schema (page 1): SQLite words its error in bytes that are not
    UTF-8."""
    blob[blob.index(b"CREATE TABLE") + len(b"CREATE ")] ^= 0x80


def _truncate(blob: bytearray) -> None:
    """The second half of the file gone (a disk full, a copy cut short)."""
    del blob[len(blob) // 2:]


def _flip_leaves(blob: bytearray) -> None:
    """One bit flipped in every 64th byte past page 1: b-tree pages and cells damaged."""
    for at in range(4096, len(blob), 64):
        blob[at] ^= 0x10


@pytest.mark.parametrize("damage", [_flip_schema, _truncate, _flip_leaves])
def test_a_scorer_checking_against_a_damaged_log_starts_fresh_instead_of_crashing(
        audited: Settings, caplog: pytest.LogCaptureFixture,
        damage: Callable[[bytearray], None]) -> None:
    """A damaged audit store made the rebalance callback of a ``--verify-checkpoints`` scorer
    raise (UnicodeDecodeError, DatabaseError). Now every checkpoint is "not trusted", with the
    reason logged, and the scorer replays its partitions from the start."""
    produce_chain(audited, 6, range(40))
    first = ScorerService(audited, session_timeout_ms=2000, heartbeat_interval_ms=500)
    read = first.run(input_finished=lambda: True).consumed
    AuditorService(audited).run(input_finished=lambda: True)
    store = Path(audited.audit.store)
    blob = bytearray(store.read_bytes())
    damage(blob)
    store.write_bytes(bytes(blob))
    assert not verify_store(store, public_key=_public_key(audited)).ok

    checking = audited.replace(audit__verify_checkpoints=True)
    second = ScorerService(checking, session_timeout_ms=2000, heartbeat_interval_ms=500)
    with caplog.at_level(logging.WARNING):
        stats = second.run(input_finished=lambda: True)
    assert read > 0 and stats.consumed == read  # nothing restored: all of it read again
    assert "is not trusted" in caplog.text


def test_a_running_auditor_seals_the_file_when_idle_and_publishes_the_seal_head(
        audited: Settings, tmp_path: Path,
        producer_factory: Callable[..., KafkaProducer]) -> None:
    send_alerts(audited, range(12), producer_factory)
    stop = threading.Event()
    service = AuditorService(audited, stop, seal_interval_s=0.5)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    store = Path(audited.audit.store)
    try:
        deadline, result = time.monotonic() + 60, None
        while time.monotonic() < deadline and not (result and result.sealed
                                                   and result.size == 12):
            time.sleep(0.3)
            if _public_key(audited).is_file():
                result = verify_store(store, public_key=_public_key(audited))
        assert result is not None and result.ok and result.sealed and result.size == 12, result
        assert thread.is_alive() and service.stats.seals >= 1  # sealed while running
        published, why = newest_published_head(audited, load_public_key(_public_key(audited)))
        assert published is not None and published.size == 12, why
        copy = tmp_path / "copy.db"
        shutil.copy(store, copy)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    with closing(sqlite3.connect(copy)) as conn:
        conn.execute("DROP TABLE seal")
        conn.commit()
    removed = verify_store(copy, public_key=_public_key(audited), external_heads=[published])
    assert not removed.ok and "the file seal was removed" in str(removed), removed
    done = subprocess.run([CHAINWATCH, "audit", "verify", "--store", str(store)],
                          env=cli_env(audited), capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "consistent with the external head of 12 leaves" in done.stdout
