"""Tamper evidence that cannot be stripped: removing or damaging the seal, rolling the log
back, or putting a stray WAL beside a changed file is FAILED, never OK; and a verification
without a head kept outside the file says so."""

from __future__ import annotations

import sqlite3
import struct
from contextlib import closing
from pathlib import Path

import pytest

from pipeline.audit import AuditError, AuditLog, SignedHead, Signer, VerifyResult, verify_store
from pipeline.audit.external import NO_EXTERNAL_HEAD, parse_head
from pipeline.audit.seal import MAGIC
from tests.unit.test_audit_verify import make_leaf

SIGNER = Signer.generate()
SIZE, BATCH = 30, 10


class Sealed:
    def __init__(self, path: Path, heads: list[SignedHead], seal_head: SignedHead) -> None:
        self.path, self.heads, self.seal_head = path, heads, seal_head


@pytest.fixture
def sealed(tmp_path: Path) -> Sealed:
    path = tmp_path / "audit.db"
    heads = []
    with AuditLog.open(path, SIGNER) as log:
        for start in range(0, SIZE, BATCH):
            result = log.append([make_leaf(i) for i in range(start, start + BATCH)],
                                {("chainwatch.alerts", 0): start + BATCH})
            assert result.head is not None
            heads.append(result.head)
    assert log.seal_head is not None  # closing sealed the file and signed a seal head
    return Sealed(path, heads, log.seal_head)


def verify(path: Path, *heads: SignedHead) -> VerifyResult:
    return verify_store(path, public_key=SIGNER.public_hex(), external_heads=heads)


def sql(path: Path, *statements: str) -> None:
    with closing(sqlite3.connect(path)) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.commit()


def flip_free_space(path: Path) -> int:
    """Flip one byte in the unallocated space of a b-tree page: a change no entry shows."""
    blob = bytearray(path.read_bytes())
    page_size: int = struct.unpack(">H", blob[16:18])[0]
    for page in range(1, len(blob) // page_size):  # not page 1 (the header is checked)
        start = page * page_size
        kind, cells, content = blob[start], *struct.unpack(">HH", blob[start + 3:start + 7])
        if kind not in (2, 5, 10, 13):
            continue
        header = 8 if kind in (10, 13) else 12
        gap_start, gap_end = start + header + 2 * cells, start + (content or 65536)
        if gap_end - gap_start > 8:
            at: int = gap_start + 4
            blob[at] ^= 0x20
            path.write_bytes(bytes(blob))
            return at
    raise AssertionError("no page with free space")


def failed(result: VerifyResult, problem: str) -> None:
    assert not result.ok and not str(result).startswith("OK"), result
    assert problem in str(result), str(result)


def test_a_free_space_flip_alone_is_caught_by_the_seal(sealed: Sealed) -> None:
    assert verify(sealed.path).sealed
    flip_free_space(sealed.path)
    failed(verify(sealed.path), "differs from its signed seal")


def test_deleting_the_seal_record_of_a_tampered_store_fails(sealed: Sealed) -> None:
    flip_free_space(sealed.path)
    sql(sealed.path, "DELETE FROM seal")
    failed(verify(sealed.path), "seal was deleted")  # the file itself tells
    failed(verify(sealed.path, sealed.seal_head), "seal was deleted")


def test_dropping_the_seal_table_is_caught_by_the_published_seal_head(sealed: Sealed) -> None:
    flip_free_space(sealed.path)
    sql(sealed.path, "DROP TABLE seal")
    failed(verify(sealed.path, sealed.seal_head), "the file seal was removed")
    failed(verify(sealed.path, sealed.heads[-1], sealed.seal_head), "seal was removed")
    alone = verify(sealed.path)  # nothing in the file can tell: it says so plainly
    assert alone.ok and not alone.sealed and NO_EXTERNAL_HEAD in str(alone)


def test_flipping_the_seal_magic_fails(sealed: Sealed) -> None:
    blob = bytearray(sealed.path.read_bytes())
    at = blob.index(MAGIC)
    blob[at:at + len(MAGIC)] = bytes(b ^ 0xFF for b in MAGIC)
    sealed.path.write_bytes(bytes(blob))
    failed(verify(sealed.path), "seal record is damaged")


@pytest.mark.parametrize("remove_seal", ["DELETE FROM seal", "DROP TABLE seal"])
def test_dropping_the_last_batch_and_the_seal_fails(sealed: Sealed, remove_seal: str) -> None:
    kept = SIZE - BATCH
    sql(sealed.path, f"DELETE FROM leaves WHERE idx >= {kept}",
        f"DELETE FROM id_keys WHERE idx >= {kept}",
        f"DELETE FROM nodes WHERE ((idx + 1) << level) > {kept}",
        f"DELETE FROM heads WHERE size > {kept}", remove_seal)
    rollback = f"rollback: store has {kept} leaves, head signed for {SIZE}"
    failed(verify(sealed.path, sealed.seal_head), rollback)
    failed(verify(sealed.path, sealed.heads[-1]), rollback)
    if remove_seal.startswith("DELETE"):
        failed(verify(sealed.path), "seal was deleted")
    else:
        assert NO_EXTERNAL_HEAD in str(verify(sealed.path))


def test_a_stray_wal_does_not_hide_a_free_space_flip(sealed: Sealed) -> None:
    flip_free_space(sealed.path)
    Path(f"{sealed.path}-wal").write_bytes(b"\x00")
    failed(verify(sealed.path), "differs from its signed seal")
    failed(verify(sealed.path, sealed.seal_head), "differs from its signed seal")


def test_an_honest_log_is_consistent_with_the_heads_it_published(sealed: Sealed) -> None:
    for head in (sealed.heads[0], sealed.heads[-1], sealed.seal_head):
        result = verify(sealed.path, head)
        assert result.ok and result.sealed, result
        assert f"consistent with the external head of {head.size} leaves" in str(result)
    # the log grows after the seal: the old seal head no longer asks for a seal at its size
    with AuditLog.open(sealed.path, SIGNER) as log:
        log.append([make_leaf(SIZE)])
        assert log.seal() is not None and log.seal_head is not None
        newer = log.seal_head
        log.append([make_leaf(SIZE + 1)])
    assert verify(sealed.path, sealed.seal_head, newer).ok


def test_a_head_that_is_not_the_logs_fails(sealed: Sealed) -> None:
    thief = Signer.generate()
    head = sealed.heads[-1]
    forged = thief.sign_head(head.size, head.root, head.prev, head.timestamp_ms)
    failed(verify(sealed.path, forged), "not signed by the given key")
    other = SIGNER.sign_head(head.size, bytes(32), head.prev, head.timestamp_ms)
    failed(verify(sealed.path, other), "the log was rewritten")


def test_a_head_is_read_from_json_hex_or_a_file(sealed: Sealed, tmp_path: Path) -> None:
    head = sealed.seal_head
    saved = tmp_path / "head.json"
    saved.write_bytes(head.to_json())
    raw = tmp_path / "head.bin"
    raw.write_bytes(head.to_bytes())
    for given in (head.to_json().decode(), head.to_bytes().hex(), str(saved), str(raw)):
        assert parse_head(given) == head
    for bad in ("", "zz", "{}", head.to_bytes().hex()[:-2], str(tmp_path)):
        with pytest.raises(AuditError, match="is not a signed head"):
            parse_head(bad)
