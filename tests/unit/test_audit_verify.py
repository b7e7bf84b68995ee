"""verify_store on real files: a good log is OK; a changed, deleted, reordered or inserted
entry, a touched head, node or key, a flipped byte or a broken file is never OK, and the
result names the place."""

from __future__ import annotations

import random
import shutil
import sqlite3
import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from pipeline.alerts import Alert
from pipeline.audit import (
    AuditLog,
    AuditReader,
    Leaf,
    Signer,
    VerifyResult,
    verify_store,
)
from pipeline.audit.ids import IdIndex, id_key
from pipeline.checkpoints import CheckpointRef

SIZE, BATCH = 50, 10
SIGNER = Signer.generate()


def make_leaf(i: int) -> Leaf:
    if i % 5 == 4:
        sha = f"{i:064x}"
        return Leaf.from_checkpoint(CheckpointRef(
            uri=f"file:///c/g/p0001/{i:012d}-{sha}.ckpt", group="g", task="p0001", seq=i,
            sha256=sha, size=i, created_at=1_700_000_000_000 + i,
            meta={"partition": 1, "offsets": {"chain.dex": i}, "events": i,
                  "state_format": 1}))
    return Leaf.from_alert(Alert.build(
        type="rug_pull", severity="critical", score=0.99, subject=f"0x{i:040x}",
        detector="liquidity_drain", model_version="1", evidence={"drained": 0.97},
        source={"topic": "chain.dex", "partition": 0, "offset": i, "item_ids": [f"log_{i}"]},
        event_time=1000 + i, detected_at=1001 + i))


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    with AuditLog.open(path, SIGNER) as log:
        for start in range(0, SIZE, BATCH):
            log.append([make_leaf(i) for i in range(start, start + BATCH)],
                       {("chainwatch.alerts", 0): start + BATCH})
    assert not Path(f"{path}-wal").exists()  # closing folded the WAL into the file
    return path


def verify(path: Path) -> VerifyResult:
    return verify_store(path, public_key=SIGNER.public_hex())


def tamper(path: Path, *statements: str | tuple[str, tuple[object, ...]]) -> None:
    with closing(sqlite3.connect(path)) as conn:
        for statement in statements:
            sql, args = statement if isinstance(statement, tuple) else (statement, ())
            conn.execute(sql, args)
        conn.commit()


def failed(result: VerifyResult, *, index: int | None = None, head: int | None = None,
           problem: str = "") -> None:
    assert not result.ok and not result.unreadable, result
    assert problem in str(result.problem), result
    if index is not None:
        assert result.index == index, result
    if head is not None:
        assert result.head == head, result
    assert str(result).startswith("FAILED")


def test_a_good_log_verifies(log_path: Path) -> None:
    result = verify(log_path)
    assert result.ok and (result.size, result.heads) == (SIZE, SIZE // BATCH), result
    with AuditReader.open(log_path) as reader:
        assert result.root == reader.root
    assert str(result).startswith(f"OK: {SIZE} leaves, 5 signed heads, root ")


def test_an_empty_log_verifies(tmp_path: Path) -> None:
    AuditLog.open(tmp_path / "empty.db", SIGNER).close()
    result = verify(tmp_path / "empty.db")
    assert result.ok and result.size == 0 and result.heads == 0


def test_a_log_verifies_while_its_writer_appends(log_path: Path) -> None:
    stop = threading.Event()

    def append() -> None:
        with AuditLog.open(log_path, SIGNER) as log:
            start = SIZE
            while not stop.is_set():
                log.append([make_leaf(i) for i in range(start, start + 7)])
                start += 7

    writer = threading.Thread(target=append)
    writer.start()
    try:
        results = [verify(log_path) for _ in range(15)]
    finally:
        stop.set()
        writer.join()
    assert all(r.ok for r in results), [str(r) for r in results if not r.ok]
    assert len({r.size for r in results}) > 1  # the log grew between them


def test_another_key_fails(log_path: Path) -> None:
    result = verify_store(log_path, public_key=Signer.generate().public_key)
    failed(result, problem="not by the key given")


# -- leaves ----------------------------------------------------------------------------------

def test_a_changed_leaf(log_path: Path) -> None:
    data = make_leaf(17).data.replace(b'"score":0.99', b'"score":0.11')
    tamper(log_path, ("UPDATE leaves SET data = ? WHERE idx = 17", (data,)))
    result = verify(log_path)
    failed(result, index=17, problem="leaf hash differs")
    assert result.leaf_id == make_leaf(17).id and "at leaf 17, id " in str(result)


def test_a_changed_leaf_with_its_hash_recomputed(log_path: Path) -> None:
    forged = make_leaf(13).data.replace(b'"score":0.99', b'"score":0.11')
    tamper(log_path, ("UPDATE leaves SET data = ?, hash = ? WHERE idx = 13",
                      (forged, Leaf.decode(forged).hash)))
    result = verify(log_path)  # the stored node over leaves 0..15 comes before head 1 (20)
    failed(result, index=0, problem="stored node 4/0 differs from the one rebuilt from "
                                    "leaves 0..15")


def test_a_changed_leaf_in_the_last_partial_group_is_caught_by_its_head(log_path: Path) -> None:
    forged = make_leaf(48).data.replace(b"rug_pull", b"wash_trading")
    tamper(log_path, ("UPDATE leaves SET data = ?, hash = ? WHERE idx = 48",
                      (forged, Leaf.decode(forged).hash)))
    failed(verify(log_path), index=40, head=4,
           problem="head 4 root differs at size 50: a leaf in 40..49")


@pytest.mark.parametrize(("sql", "problem"), [
    ("UPDATE leaves SET data = CAST('alert' || char(10) || '{}' AS BLOB) WHERE idx = 12",
     "do not re-parse"),
    ("UPDATE leaves SET id = 'someone-else' WHERE idx = 12", "differ from what the leaf"),
    ("UPDATE leaves SET kind = 'checkpoint' WHERE idx = 12", "differ from what the leaf"),
    ("UPDATE leaves SET hash = zeroblob(32) WHERE idx = 12", "leaf hash differs"),
    ("UPDATE leaves SET hash = 'text' WHERE idx = 12", "not stored as bytes"),
    ("UPDATE id_keys SET key = key + 1 WHERE idx = 12", "id_keys table was altered"),
])
def test_a_touched_leaf_row(log_path: Path, sql: str, problem: str) -> None:
    tamper(log_path, sql)
    failed(verify(log_path), index=12, problem=problem)


def test_a_deleted_entry(log_path: Path) -> None:
    tamper(log_path, "DELETE FROM leaves WHERE idx = 23", "DELETE FROM id_keys WHERE idx = 23")
    failed(verify(log_path), index=23, problem="leaf 23 is missing")


def test_a_deleted_last_entry(log_path: Path) -> None:
    tamper(log_path, "DELETE FROM leaves WHERE idx = 49", "DELETE FROM id_keys WHERE idx = 49")
    failed(verify(log_path), index=49, head=4, problem="removed from its end")


def test_two_reordered_entries(log_path: Path) -> None:
    swap = ["UPDATE {t} SET idx = -1 WHERE idx = 33", "UPDATE {t} SET idx = 33 WHERE idx = 35",
            "UPDATE {t} SET idx = 35 WHERE idx = -1"]
    tamper(log_path, *[s.format(t=t) for t in ("leaves", "id_keys") for s in swap])
    failed(verify(log_path), index=30, head=3,  # the head at 40 comes before node 32..47
           problem="head 3 root differs at size 40: a leaf in 30..39 was changed, inserted, "
                   "removed or reordered")


def test_two_reordered_entries_without_their_keys(log_path: Path) -> None:
    swap = ["UPDATE leaves SET idx = -1 WHERE idx = 3", "UPDATE leaves SET idx = 3 WHERE idx = 5",
            "UPDATE leaves SET idx = 5 WHERE idx = -1"]
    tamper(log_path, *swap)
    failed(verify(log_path), index=3, problem="id_keys table was altered")


def test_an_inserted_entry_in_the_middle(log_path: Path) -> None:
    new = make_leaf(1000)
    shift = [f"UPDATE {t} SET idx = -idx - 1 WHERE idx >= 20" for t in ("leaves", "id_keys")]
    back = [f"UPDATE {t} SET idx = -idx WHERE idx < 0" for t in ("leaves", "id_keys")]
    tamper(log_path, *shift, *back,
           ("INSERT INTO leaves VALUES (20, ?, ?, ?, ?)", (new.kind, new.id, new.data,
                                                           new.hash)),
           ("INSERT INTO id_keys VALUES (20, ?)", (id_key(new.id),)))
    failed(verify(log_path), index=20, head=2, problem="head 2 root differs at size 30")


def test_an_inserted_entry_at_the_end(log_path: Path) -> None:
    new = make_leaf(1000)
    tamper(log_path, ("INSERT INTO leaves VALUES (50, ?, ?, ?, ?)",
                      (new.kind, new.id, new.data, new.hash)),
           ("INSERT INTO id_keys VALUES (50, ?)", (id_key(new.id),)))
    failed(verify(log_path), index=50, problem="leaves 50..50 are not covered by any signed head")


def test_a_repeated_id_from_a_buggy_writer(log_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           ) -> None:
    monkeypatch.setattr(IdIndex, "find", lambda *_args: {})  # the writer forgets every id
    with AuditLog.open(log_path, SIGNER) as log:
        log.append([make_leaf(7)])
    monkeypatch.undo()
    result = verify(log_path)
    failed(result, index=50, problem="leaf 50 repeats the id of leaf 7")
    assert result.leaf_id == make_leaf(7).id


# -- heads, nodes, keys ----------------------------------------------------------------------

@pytest.mark.parametrize(("statements", "head", "problem"), [
    (["UPDATE heads SET root = zeroblob(32) WHERE seq = 3"], 2, "head 2 signature invalid"),
    (["UPDATE heads SET timestamp_ms = timestamp_ms + 1 WHERE seq = 2"], 1, "signature"),
    (["UPDATE heads SET size = 19 WHERE seq = 2"], 1, "signature invalid"),
    (["DELETE FROM heads WHERE seq = 3"], 2, "previous-head hash broken"),
    (["DELETE FROM heads WHERE seq = 5"], None, "leaves 40..49 are not covered"),
    (["UPDATE heads SET signature = 'x' WHERE seq = 1"], 0, "malformed"),
])
def test_a_touched_head(log_path: Path, statements: list[str], head: int | None,
                        problem: str) -> None:
    tamper(log_path, *statements)
    failed(verify(log_path), head=head, problem=problem)


def test_heads_resigned_with_another_key_fail(log_path: Path) -> None:
    thief = Signer.generate()
    with closing(sqlite3.connect(log_path)) as conn:
        rows = conn.execute("SELECT seq, size, root, timestamp_ms FROM heads ORDER BY seq")
        prev, heads = bytes(32), []
        for seq, size, root, timestamp in rows.fetchall():
            head = thief.sign_head(size, root, prev, timestamp)
            heads.append((head.prev, head.signature, seq))
            prev = head.hash()
        conn.executemany("UPDATE heads SET prev = ?, signature = ? WHERE seq = ?", heads)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'public_key'", (thief.public_hex(),))
        conn.commit()
    failed(verify(log_path), problem="not by the key given")
    # the file seal is still the true key's: the thief must drop it too
    failed(verify_store(log_path, public_key=thief.public_key), problem="seal is not signed")
    tamper(log_path, "DELETE FROM seal")
    failed(verify_store(log_path, public_key=thief.public_key), problem="seal was deleted")
    tamper(log_path, "DROP TABLE seal")  # deleting only its record is caught
    resigned = verify_store(log_path, public_key=thief.public_key)
    assert resigned.ok and not resigned.sealed  # only the true key tells


@pytest.mark.parametrize(("sql", "problem"), [
    ("UPDATE nodes SET hash = zeroblob(32) WHERE level = 4 AND idx = 2", "stored node 4/2 "
                                                                        "differs"),
    ("DELETE FROM nodes WHERE level = 4 AND idx = 0", "stored node 4/0 (leaves 0..15) is "
                                                      "missing"),
    ("INSERT INTO nodes VALUES (4, 3, zeroblob(32))", "lies beyond"),
    ("INSERT INTO nodes VALUES (3, 0, zeroblob(32))", "level 3"),
    ("DELETE FROM id_keys WHERE idx = 49", "id_keys table was altered"),
    ("INSERT INTO id_keys VALUES (50, 7)", "id_keys table has 51 rows"),
    ("UPDATE meta SET value = 'chainwatch-audit-0' WHERE key = 'format'", "not a chainwatch"),
])
def test_touched_nodes_keys_and_meta(log_path: Path, sql: str, problem: str) -> None:
    tamper(log_path, sql)
    result = verify(log_path)
    assert not result.ok and problem in str(result.problem), result


# -- bytes of the file -----------------------------------------------------------------------

def test_a_changed_byte_inside_a_leaf(log_path: Path) -> None:
    blob = bytearray(log_path.read_bytes())
    at = blob.find(f"0x{26:040x}".encode())
    assert at > 0 and blob.count(f"0x{26:040x}".encode()) == 1
    blob[at + 30] = ord("f")  # still valid, canonical JSON: only the hash can tell
    log_path.write_bytes(bytes(blob))
    failed(verify(log_path), index=26, problem="leaf hash differs")


def test_a_changed_byte_in_the_sqlite_header_is_unreadable(log_path: Path) -> None:
    blob = bytearray(log_path.read_bytes())
    blob[3] ^= 0x01  # "SQLite format 3"
    log_path.write_bytes(bytes(blob))
    result = verify(log_path)
    assert result.unreadable and not result.ok and str(result).startswith("UNREADABLE")


def logical_content(path: Path) -> object:
    """Everything verification vouches for (not the offsets: they are not signed), or the
    error reading it."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            return [conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
                    for table in ("leaves", "id_keys", "nodes", "heads", "meta")]
    except sqlite3.Error as exc:
        return exc


def test_a_flipped_byte_anywhere_in_a_sealed_file_is_never_ok(log_path: Path,
                                                              tmp_path: Path) -> None:
    assert verify(log_path).sealed  # closing the log sealed it
    original = log_path.read_bytes()
    expected = logical_content(log_path)
    rng = random.Random(6962)
    offsets = sorted({*range(100), *rng.sample(range(len(original)), 250)})
    outcomes = {"caught": 0, "harmless": 0}
    for at in offsets:
        copy = tmp_path / f"flip-{at}.db"
        blob = bytearray(original)
        blob[at] ^= 1 << rng.randrange(8)
        copy.write_bytes(bytes(blob))
        result = verify(copy)
        if result.ok:  # only if the flip changed nothing the log vouches for
            assert logical_content(copy) == expected, (at, result)
            outcomes["harmless"] += 1
        else:
            outcomes["caught"] += 1
        for leftover in tmp_path.glob(f"flip-{at}.db*"):
            leftover.unlink()
    assert outcomes == {"caught": len(offsets), "harmless": 0}, outcomes


def test_an_unsealed_log_is_checked_entry_by_entry_and_says_so(log_path: Path) -> None:
    tamper(log_path, "DROP TABLE seal")  # as a log looks before its first seal
    result = verify(log_path)
    assert result.ok and not result.sealed and "not sealed" in str(result)
    assert "no external head to check against" in str(result)
    with AuditLog.open(log_path, SIGNER) as log:
        assert log.seal() is not None
    assert verify(log_path).sealed


# -- files that cannot be read ---------------------------------------------------------------

def _other_database(path: Path) -> None:
    path.unlink()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.commit()


@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(b"\x00" * 4096),
    lambda p: p.write_bytes(b""),
    lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3]),
    lambda p: p.write_bytes(random.Random(1).randbytes(len(p.read_bytes()))),
    lambda p: p.unlink(),
    lambda p: (p.unlink(), p.mkdir()),
    _other_database,
], ids=["zeros", "empty", "truncated", "random", "missing", "directory", "other-database"])
def test_unreadable_files_say_so(log_path: Path, damage: Callable[[Path], object]) -> None:
    damage(log_path)
    result = verify(log_path)
    assert not result.ok, result
    assert result.unreadable or result.problem, result


def test_a_copy_of_a_log_verifies_in_another_place(log_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "copy.db"
    copy.parent.mkdir()
    shutil.copy(log_path, copy)
    assert verify(copy).ok

