"""The SQLite layout of an audit log, shared by the writer, readers and the verifier.

Tables
    ``meta``     ``format`` (:data:`FORMAT`), ``node_stride`` and ``public_key`` (hex): what
                 the log claims about itself. Verification never trusts this key; it is
                 there so a writer refuses to sign a log with a key that is not the log's.
    ``leaves``   ``idx`` (0, 1, 2, ... with no gap), ``kind``, ``id``, ``data`` (the
                 canonical leaf bytes) and ``hash`` (their RFC 9162 leaf hash). Ids are
                 unique: the writer skips a known id, :func:`~pipeline.audit.verify_store`
                 checks it. Only checkpoint ids have a SQLite index (partial, small: what a
                 scorer looks up); see :mod:`pipeline.audit.ids` for why the others do not.
    ``id_keys``  ``idx -> key``: the 64-bit key of each leaf's id, read into memory to find
                 leaves by id.
    ``nodes``    the hashes of the perfect subtrees whose level is a multiple of
                 :data:`NODE_STRIDE` (16, 256, 4096, ... leaves): about one row per 15
                 leaves. Any perfect subtree is then at most ``2**(NODE_STRIDE-1)`` = 8
                 stored hashes away, so a proof at a million leaves reads ~150 small rows.
    ``heads``    one signed tree head per appended batch, by ``seq``.
    ``offsets``  ``(topic, partition) -> next_offset``: the input consumed so far. A batch's
                 leaves, keys, nodes, head and offsets commit in one transaction, so an
                 auditor that restarts resumes exactly where its log ends.

Durability
    WAL journal, ``synchronous=FULL``: a batch is on disk when ``append`` returns. The WAL
    is checkpointed into the file every :data:`WAL_PAGES` pages (~40 MB) rather than 1000,
    so the pages a run of batches keeps touching are copied once, not per batch.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from pipeline.audit.errors import AuditError
from pipeline.audit.merkle import HASH_SIZE, perfect_root
from pipeline.audit.signing import SignedHead

FORMAT = "chainwatch-audit-1"
NODE_STRIDE = 4
CACHE_KIB = 64 * 1024
WAL_PAGES = 10_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leaves (
    idx INTEGER PRIMARY KEY, kind TEXT NOT NULL, id TEXT NOT NULL,
    data BLOB NOT NULL, hash BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS checkpoint_ids ON leaves (id) WHERE kind = 'checkpoint';
CREATE TABLE IF NOT EXISTS id_keys (
    idx INTEGER PRIMARY KEY, key INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heads (
    seq INTEGER PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL, prev BLOB NOT NULL,
    timestamp_ms INTEGER NOT NULL, signature BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)) WITHOUT ROWID;
"""
TABLES = ("heads", "id_keys", "leaves", "meta", "nodes", "offsets")
HEAD_COLUMNS = "size, root, prev, timestamp_ms, signature"


def connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, synchronous=FULL."""
    if readonly:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                               isolation_level=None)
    else:
        conn = sqlite3.connect(path, isolation_level=None)
    try:
        if not readonly:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    except BaseException:
        conn.close()
        raise
    return conn


DAMAGE = (sqlite3.Error, UnicodeDecodeError)
"""What SQLite raises on a damaged file: its errors, and UnicodeDecodeError when a damaged
schema makes it word an error message in bytes that are not UTF-8."""


def open_db(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """:func:`connect`, with SQLite's errors as AuditError."""
    try:
        return connect(path, readonly=readonly)
    except DAMAGE as exc:
        raise AuditError(f"cannot open the audit log {path}: {exc}; check the path and its "
                         "permissions, or run chainwatch audit verify on it") from exc


@contextlib.contextmanager
def sql_errors(doing: str) -> Iterator[None]:
    """Turn sqlite3 errors into AuditError, saying what was being done."""
    try:
        yield
    except DAMAGE as exc:
        raise AuditError(f"could not {doing}: {exc}; if the file is damaged, run chainwatch "
                         "audit verify on it") from exc


def head_from_row(row: tuple[object, ...]) -> SignedHead:
    """The head of a ``SELECT {HEAD_COLUMNS}`` row (types unchecked: see verify_head)."""
    size, root, prev, timestamp_ms, signature = row
    return SignedHead(size, root, prev, timestamp_ms, signature)  # type: ignore[arg-type]


def latest_head(conn: sqlite3.Connection) -> SignedHead | None:
    row = conn.execute(f"SELECT {HEAD_COLUMNS} FROM heads ORDER BY seq DESC LIMIT 1").fetchone()
    return None if row is None else head_from_row(row)


class StoredTree:
    """A :data:`~pipeline.audit.proofs.NodeSource` over the ``leaves`` and ``nodes`` tables."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __call__(self, level: int, index: int) -> bytes:
        base = level - level % NODE_STRIDE
        span = level - base
        first, count = index << span, 1 << span
        if base == 0:
            rows = self._conn.execute(
                "SELECT hash FROM leaves WHERE idx >= ? AND idx < ? ORDER BY idx",
                (first, first + count)).fetchall()
        else:
            rows = self._conn.execute(
                "SELECT hash FROM nodes WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx",
                (base, first, first + count)).fetchall()
        hashes = [row[0] for row in rows]
        if len(hashes) != count or any(type(h) is not bytes or len(h) != HASH_SIZE
                                       for h in hashes):
            raise AuditError(f"the audit log lacks the hashes under subtree {level}/{index} "
                             "(leaves or nodes are missing or malformed); it is damaged: run "
                             "chainwatch audit verify")
        return perfect_root(hashes)
