"""The SQLite audit log: batches, duplicates, offsets in the same transaction, resuming,
readers beside the writer, and proofs that check out against signed heads alone."""

from __future__ import annotations

import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.audit import (
    AuditError,
    AuditLog,
    AuditReader,
    Leaf,
    ProofError,
    Signer,
    default_key_path,
    ids,
    root_of,
    verify_consistency,
    verify_head,
    verify_inclusion,
    verify_store,
)
from pipeline.audit.ids import IdIndex, id_key
from pipeline.checkpoints import CheckpointRef

ALERTS = "chainwatch.alerts"


def leaf(i: int, variant: int = 0) -> Leaf:
    """A checkpoint leaf: small, valid, with id ``checkpoint:<i as 64 hex>``."""
    sha = f"{i:064x}"
    return Leaf.from_checkpoint(CheckpointRef(
        uri=f"file:///c/g/p0000/{i + 1:012d}-{sha}.ckpt", group="g", task="p0000", seq=i + 1,
        sha256=sha, size=variant, created_at=1_700_000_000_000 + i,
        meta={"partition": 0, "offsets": {"chain.dex": i}, "events": i, "state_format": 1}))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


def test_batches_get_contiguous_indexes_and_one_signed_head_each(path: Path) -> None:
    with AuditLog.open(path, clock=lambda: 1000) as log:
        first = log.append([leaf(i) for i in range(5)], {(ALERTS, 0): 5})
        second = log.append([leaf(i) for i in range(5, 8)], {(ALERTS, 0): 8, (ALERTS, 1): 2})
        assert (first.appended, first.first_index, second.first_index) == (5, 0, 5)
        assert first.head is not None and second.head is not None
        assert (first.head.size, second.head.size, log.size) == (5, 8, 8)
        assert first.head.prev == bytes(32) and second.head.prev == first.head.hash()
        assert second.head.root == root_of([leaf(i).hash for i in range(8)])
        assert log.heads() == [first.head, second.head] and log.heads(1) == [second.head]
        assert log.offsets() == {(ALERTS, 0): 8, (ALERTS, 1): 2}
        assert log.leaf(6) == leaf(6) and log.index_of(leaf(6).id) == 6
        assert verify_head(log.public_key, second.head)
    key = default_key_path(path)
    assert key.name == "audit.db.key" and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert verify_store(path, public_key=Path(f"{key}.pub")).ok


def test_duplicate_ids_are_appended_once_and_reported(path: Path) -> None:
    with AuditLog.open(path) as log:
        log.append([leaf(0), leaf(1)])
        result = log.append([leaf(1), leaf(2), leaf(2), leaf(0, variant=9)])
        assert result.appended == 1 and result.first_index == 2
        assert result.duplicates == (leaf(1).id, leaf(2).id, leaf(0).id)
        assert result.conflicts == (leaf(0).id,)  # same id, other bytes: the first one stays
        assert log.leaf(0) == leaf(0)
        again = log.append([leaf(0), leaf(1)], {(ALERTS, 0): 99})
        assert (again.appended, again.head, log.size) == (0, None, 3)  # no new head
        assert len(log.heads()) == 2 and log.offsets() == {(ALERTS, 0): 99}
    with AuditLog.open(path) as log:  # also after a restart
        assert log.append([leaf(2), leaf(3)]).duplicates == (leaf(2).id,)
        assert [log.index_of(leaf(i).id) for i in range(5)] == [0, 1, 2, 3, None]


def test_a_failed_batch_leaves_nothing_behind(path: Path, monkeypatch: pytest.MonkeyPatch,
                                              ) -> None:
    with AuditLog.open(path) as log:
        log.append([leaf(0)], {(ALERTS, 0): 1})

        def broken(*_args: object) -> None:
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(log.signer, "sign_head", broken)
        with pytest.raises(RuntimeError):
            log.append([leaf(1), leaf(2)], {(ALERTS, 0): 3})
        monkeypatch.undo()
        assert (log.size, log.offsets()) == (1, {(ALERTS, 0): 1})
        assert log.index_of(leaf(1).id) is None
        assert log.append([leaf(1)], {(ALERTS, 0): 2}).first_index == 1
    assert verify_store(path, public_key=Signer.load(default_key_path(path)).public_key).ok


def test_a_restarted_writer_resumes_exactly(path: Path) -> None:
    signer = Signer.generate()
    with AuditLog.open(path, signer) as log:
        for start in range(0, 40, 7):
            log.append([leaf(i) for i in range(start, min(start + 7, 40))],
                       {(ALERTS, 3): start + 7})
        before = log.head
        assert before is not None
    with AuditLog.open(path, signer) as log:
        assert log.head == before and log.offsets() == {(ALERTS, 3): 42}
        result = log.append([leaf(40)])
        assert result.head is not None and result.head.prev == before.hash()
        assert result.head.root == root_of([leaf(i).hash for i in range(41)])
    assert verify_store(path, public_key=signer.public_key).ok


def test_the_sink_protocol_buffers_until_flush_and_close_flushes(path: Path) -> None:
    log = AuditLog.open(path)
    log.write(leaf(0), (ALERTS, 0, 1))
    log.write(None, (ALERTS, 0, 2))  # a record that made no leaf still moves the offset
    log.write(leaf(1))
    assert log.size == 0
    result = log.flush()
    assert result is not None and result.appended == 2 and log.offsets() == {(ALERTS, 0): 2}
    assert log.flush() is None
    log.write(leaf(2), (ALERTS, 0, 3))
    log.close()
    log.close()
    with AuditReader.open(path) as reader:
        assert reader.size == 3 and reader.offsets() == {(ALERTS, 0): 3}
    with pytest.raises(AuditError, match="closed"):
        log.write(leaf(3))


def test_readers_see_whole_batches_while_the_writer_appends(path: Path) -> None:
    with AuditLog.open(path) as log, AuditReader.open(path) as reader:
        assert reader.size == 0 and reader.head is None
        for batch in range(5):
            log.append([leaf(batch * 3 + i) for i in range(3)])
            assert reader.size == log.size == 3 * (batch + 1)
            assert reader.head == log.head
        assert reader.has_checkpoint(f"{4:064x}") and not reader.has_checkpoint("ff" * 32)
        assert reader.index_of(leaf(14).id) == 14 and reader.index_of("nope") is None
        assert reader.public_hex() == log.public_hex()
        proof = reader.inclusion_proof(leaf(7).id)
        assert log.head is not None
        assert verify_inclusion(log.public_key, log.head, leaf(7), proof)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader._conn.execute("INSERT INTO offsets VALUES ('t', 0, 1)")


def test_a_second_writer_is_refused(path: Path) -> None:
    signer = Signer.generate()
    with AuditLog.open(path, signer) as first, AuditLog.open(path, signer) as second:
        first.append([leaf(0)])
        with pytest.raises(AuditError, match="another process"):
            second.append([leaf(1)])


def test_a_log_refuses_a_key_that_is_not_its_own(path: Path, tmp_path: Path) -> None:
    with AuditLog.open(path) as log:
        log.append([leaf(0)])
    with pytest.raises(AuditError, match="signed with the key"):
        AuditLog.open(path, tmp_path / "other.key")


def test_files_that_are_not_audit_logs_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(AuditError, match=r"junk\.db"):
        AuditLog.open(junk, Signer.generate())
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
        conn.commit()
    with pytest.raises(AuditError, match="not a chainwatch-audit-1"):
        AuditReader.open(other)
    with pytest.raises(AuditError, match="no audit log"):
        AuditReader.open(tmp_path / "missing.db")


def test_a_writer_refuses_a_log_changed_behind_its_back(path: Path) -> None:
    signer = Signer.generate()
    with AuditLog.open(path, signer) as log:
        log.append([leaf(i) for i in range(20)])
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE leaves SET hash = ? WHERE idx = 19", (bytes(32),))
        conn.commit()
    with pytest.raises(AuditError, match="does not match its last signed head"):
        AuditLog.open(path, signer)


def test_proofs_from_the_store_verify_against_signed_heads_alone(path: Path) -> None:
    with AuditLog.open(path) as log:
        heads = []
        for start in range(0, 300, 37):
            result = log.append([leaf(i) for i in range(start, min(start + 37, 300))])
            assert result.head is not None
            heads.append(result.head)
        key = log.public_hex()
        for head in heads:
            for index in (0, head.size // 2, head.size - 1):
                proof = log.inclusion_proof(index, head.size)
                assert verify_inclusion(key, head, log.leaf(index), proof)
            for old in heads:
                if old.size <= head.size:
                    extension = log.consistency_proof(old.size, head.size)
                    assert verify_consistency(key, old, head, extension)
        with pytest.raises(ProofError):
            log.inclusion_proof(300)
        with pytest.raises(ProofError):
            log.inclusion_proof(0, 301)
        with pytest.raises(ProofError):
            log.inclusion_proof("no-such-id")
        with pytest.raises(ProofError):
            log.consistency_proof(10, 301)
        with pytest.raises(ProofError):
            log.leaf(300)


def test_bad_offsets_and_leaves_are_refused_before_anything_is_written(path: Path) -> None:
    with AuditLog.open(path) as log:
        for offsets in ({("t", -1): 1}, {("t", 0): -1}, {(1, 0): 1}, {("t", 0): "1"}):
            with pytest.raises(AuditError, match="offset"):
                log.append([leaf(0)], offsets)  # type: ignore[arg-type]
        with pytest.raises(AuditError, match="Leaf objects"):
            log.append([b"alert\n{}"])  # type: ignore[list-item]
        assert log.size == 0


@settings(max_examples=25, deadline=None)
@given(batches=st.lists(st.lists(st.integers(0, 60), max_size=12), min_size=1, max_size=8))
def test_any_sequence_of_batches_matches_an_in_memory_log(tmp_path_factory: pytest.
                                                          TempPathFactory,
                                                          batches: list[list[int]]) -> None:
    path = tmp_path_factory.mktemp("log") / "audit.db"
    signer = Signer.generate()
    seen: list[int] = []
    with AuditLog.open(path, signer) as log:
        for batch in batches:
            new = [i for n, i in enumerate(batch) if i not in seen and i not in batch[:n]]
            result = log.append([leaf(i) for i in batch])
            assert result.appended == len(new) and len(result.duplicates) == len(batch) - len(new)
            seen += new
            assert log.size == len(seen)
            assert log.root == root_of([leaf(i).hash for i in seen])
    assert verify_store(path, public_key=signer.public_key).ok


def test_the_id_index_merges_its_newest_keys_into_the_sorted_array(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids, "_RECENT_MAX", 4)
    index = IdIndex()
    keys = [id_key(str(i)) for i in range(50)]
    for i, key in enumerate(keys):
        index.add(key, i)
    assert index.covered == 50
    for i, key in enumerate(keys):
        assert i in index.candidates(key)
    assert index.candidates(id_key("fifty")) == [] or len(index.candidates(id_key("x"))) < 2


def test_the_id_index_confirms_prefix_collisions_against_stored_ids(path: Path) -> None:
    index = IdIndex()
    key = id_key("a")
    index.add(key, 0)
    index.add(key ^ 1, 1)  # same 27-bit prefix, another key: a collision to confirm
    assert index.candidates(key) == [0, 1]
    with pytest.raises(ValueError, match="covers"):
        index.add(key, 5)
    with AuditLog.open(path) as log:
        log.append([leaf(i) for i in range(3)])
        conn = log._conn
        assert index.find(conn, {leaf(2).id: key}) == {}  # candidates 0, 1: other ids
        assert index.find(conn, {leaf(1).id: key}) == {leaf(1).id: (1, leaf(1).hash)}
