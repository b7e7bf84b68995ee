"""The file seal: a signed digest of every byte of the log file, so no byte changes unseen.

Verifying the leaves, nodes and heads catches every change to what the log *says*. But an
SQLite file also holds bytes that say nothing: free space inside pages, stale copies of moved
cells, bookkeeping in its header. A byte flipped there changes no entry, and a content check
cannot see it. The seal closes that gap: when the log is at rest (the auditor is idle, or
closing), the writer checkpoints the WAL into the file and signs the SHA-256 of the whole
file, stored in the ``seal`` table.

The digest skips one thing: the seal's own bytes (it cannot contain its own hash), the one
``CWSEAL1`` record on the ``seal`` table's root page, located in the file, not trusted from
SQL. Storing the seal rewrites that record in place (same size), so every other byte of the
sealed file is the byte that was hashed; :func:`seal_file` checks this after writing and
reports no seal rather than a wrong one.

Seal record: ``CWSEAL1\\n`` ‖ size (8) ‖ root (32) ‖ digest (32) ‖ signature (64), the
signature over ``chainwatch-audit-seal-v1\\n`` ‖ size ‖ root ‖ digest. ``size`` and ``root``
tie the seal to one tree: a seal for fewer leaves than the log has is *stale* (the log grew
after it; the auditor seals again when next idle) and vouches for nothing beyond them.

Once made, the ``seal`` table always holds one record: the placeholder (not sealed yet) or a
signed seal; the writer never deletes it. So a table with no record, or a record that is
neither, is a removed or damaged seal (:func:`seal_record`), not an unsealed log. Removing
the whole table, or writing the placeholder back, leaves nothing in the file to tell: that
is a rollback to the file as it was before its first seal, and only a *seal head* kept
outside the file catches it (see :mod:`pipeline.audit.verify`).
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pipeline.audit.signing import SIGNATURE_SIZE, SignedHead, Signer

MAGIC = b"CWSEAL1\n"
CONTEXT = b"chainwatch-audit-seal-v1\n"
_BODY = struct.Struct(">Q32s32s")
SEAL_SIZE = len(MAGIC) + _BODY.size + SIGNATURE_SIZE
PLACEHOLDER = MAGIC + bytes(SEAL_SIZE - len(MAGIC))
_CHUNK = 1 << 20
SCHEMA = "CREATE TABLE IF NOT EXISTS seal (id INTEGER PRIMARY KEY CHECK (id = 1), value BLOB)"


@dataclass(frozen=True, slots=True)
class Seal:
    size: int
    root: bytes
    digest: bytes
    signature: bytes

    def message(self) -> bytes:
        return CONTEXT + _BODY.pack(self.size, self.root, self.digest)

    def to_bytes(self) -> bytes:
        return MAGIC + _BODY.pack(self.size, self.root, self.digest) + self.signature

    @classmethod
    def from_bytes(cls, data: object) -> Seal | None:
        """The seal in ``data``, or None if it is not one (wrong type, length or magic)."""
        if type(data) is not bytes or len(data) != SEAL_SIZE or not data.startswith(MAGIC):
            return None
        size, root, digest = _BODY.unpack_from(data, len(MAGIC))
        return cls(size, root, digest, data[len(MAGIC) + _BODY.size:])

    def signed_by(self, key: Ed25519PublicKey) -> bool:
        try:
            key.verify(self.signature, self.message())
        except InvalidSignature:
            return False
        return True


def seal_record(conn: sqlite3.Connection) -> tuple[Seal | None, str]:
    """The seal stored in the log, and what is wrong with the seal record ("" if nothing).

    ``(None, "")``: never sealed (no ``seal`` table, or only the placeholder);
    ``(seal, "")``: a seal, its signature not yet checked; ``(None, problem)``: the table
    has no record, or one that the writer never writes (a removed or damaged seal).
    """
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'seal'"
                        ).fetchone():
        return None, ""
    rows = conn.execute("SELECT id, value FROM seal").fetchall()
    if not rows:
        return None, "the seal table has no record: the file seal was deleted"
    if len(rows) > 1 or rows[0][0] != 1:
        return None, "the seal table holds records the writer never writes: it was altered"
    value = rows[0][1]
    if value == PLACEHOLDER:
        return None, ""
    seal = Seal.from_bytes(value)
    if seal is None or seal.signature == bytes(SIGNATURE_SIZE):
        return None, "the seal record is damaged: it is neither a signed seal nor the " \
            "placeholder the writer leaves before its first seal"
    return seal, ""


def file_digest(path: Path, conn: sqlite3.Connection) -> bytes | None:
    """SHA-256 of the file with the masked bytes zeroed; None if its seal record cannot be
    located exactly once on the seal table's root page."""
    page_size, = conn.execute("PRAGMA page_size").fetchone()
    row = conn.execute("SELECT rootpage FROM sqlite_master WHERE type = 'table' AND "
                       "name = 'seal'").fetchone()
    if row is None:
        return None
    start = (int(row[0]) - 1) * int(page_size)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(start)
        page = f.read(int(page_size))
        at = page.find(MAGIC)
        if at < 0 or page.find(MAGIC, at + 1) >= 0:
            return None
        masked = [(start + at, start + at + SEAL_SIZE)]
        f.seek(0)
        offset = 0
        while chunk := f.read(_CHUNK):
            data = bytearray(chunk)
            for low, high in masked:
                lo, hi = max(low - offset, 0), min(high - offset, len(data))
                if lo < hi:
                    data[lo:hi] = bytes(hi - lo)
            digest.update(data)
            offset += len(chunk)
    return digest.digest()


def seal_file(conn: sqlite3.Connection, path: Path, signer: Signer,
              head: SignedHead) -> Seal | None:
    """Checkpoint the WAL, then sign and store the file's digest for ``head``; None (and
    nothing changed but the placeholder) if a reader kept the WAL from being checkpointed."""
    conn.execute("BEGIN IMMEDIATE")  # the table never exists without its record
    try:
        conn.execute(SCHEMA)
        conn.execute("INSERT OR IGNORE INTO seal (id, value) VALUES (1, ?)", (PLACEHOLDER,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if not _checkpointed(conn):
        return None
    digest = file_digest(path, conn)
    if digest is None:
        return None
    unsigned = Seal(head.size, head.root, digest, bytes(SIGNATURE_SIZE))
    seal = Seal(head.size, head.root, digest, signer.sign(unsigned.message()))
    conn.execute("UPDATE seal SET value = ? WHERE id = 1", (seal.to_bytes(),))
    if not _checkpointed(conn) or file_digest(path, conn) != digest:
        return None  # the update did not stay in place: the next seal will be good
    return seal


def _checkpointed(conn: sqlite3.Connection) -> bool:
    busy, wal_frames, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return not busy and wal_frames in (done, 0, -1)
