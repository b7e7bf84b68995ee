"""Writing the audit log: an append-only Merkle log in one SQLite file, signed batch by batch.

One process writes a log (the auditor: a single sequencer). :meth:`AuditLog.open` loads
the signing key (made on first use, see :mod:`pipeline.audit.signing`) and rebuilds the
tree's perfect-subtree roots from O(log n) stored hashes, after checking they give the root
of the last signed head. Then :meth:`AuditLog.append` adds a batch in one transaction:

1. its leaves, in order; a leaf whose id is already in the log, or earlier in the batch, is
   skipped and reported as a duplicate (as a *conflict* too if its bytes differ);
2. the keys of their ids (:mod:`pipeline.audit.ids`), and the hashes of the perfect
   subtrees they complete, at the stored levels;
3. one signed head for the new size, linked to the previous head (none if no leaf is new);
4. the input offsets the batch consumed, so a restarted auditor resumes exactly.

One writer at a time, checked where it counts: every batch's transaction (and every seal)
first makes sure no other connection wrote to the file since this writer opened it
(SQLite's ``data_version``, and the leaf count), else :class:`~pipeline.audit.errors.
LogChanged`; and a writer given a ``fence`` (the auditor's Kafka lease, see
:mod:`pipeline.lease`) asks it after the batch's rows are written and before ``COMMIT``,
holding the write lock, so a writer that lost its lease while paused commits nothing
(:class:`~pipeline.audit.errors.WriterFenced`, the batch rolled back). A fenced writer
closes with :meth:`AuditLog.discard`, which neither appends nor seals.

The tree is kept incrementally (:class:`~pipeline.audit.merkle.CompactRange`): a batch
costs about two hashes per leaf, one root of O(log n) hashes and one signature.

The log is a sink like the others: ``write`` buffers, ``flush`` appends what was buffered
as one batch, ``close`` flushes and seals (:meth:`AuditLog.seal`). Everything an
:class:`~pipeline.audit.reader.AuditReader` reads, a writer reads too.

>>> import tempfile
>>> from pipeline.audit.proofs import verify_inclusion
>>> leaf = Leaf.decode(b'checkpoint\\n{"created_at":1,"group":"g","meta":{},"seq":1,'
...     b'"sha256":"' + b"ab" * 32 + b'","size":0,"task":"p0","uri":"file:///x"}')
>>> with tempfile.TemporaryDirectory() as tmp, AuditLog.open(f"{tmp}/audit.db") as log:
...     first = log.append([leaf], {("chainwatch.checkpoints", 0): 1})
...     again = log.append([leaf])
...     ok = verify_inclusion(log.public_hex(), log.head, leaf, log.inclusion_proof(leaf.id))
...     first.appended, again.duplicates == (leaf.id,), ok, log.offsets()
(1, True, True, {('chainwatch.checkpoints', 0): 1})
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from pipeline.audit.errors import AuditError, LogChanged, WriterFenced
from pipeline.audit.ids import id_key
from pipeline.audit.leaves import Leaf
from pipeline.audit.merkle import ZERO_HASH, CompactRange, Node, decompose
from pipeline.audit.reader import AuditReader
from pipeline.audit.schema import (
    FORMAT,
    HEAD_COLUMNS,
    NODE_STRIDE,
    SCHEMA,
    latest_head,
    open_db,
    sql_errors,
)
from pipeline.audit.seal import Seal, seal_file
from pipeline.audit.signing import SignedHead, Signer

logger = logging.getLogger(__name__)

Offsets = Mapping[tuple[str, int], int]
"""Input consumed: ``(topic, partition) -> next offset`` (the last offset read + 1)."""

Fence = Callable[[], AbstractContextManager[bool]]
"""``with fence() as ok:`` around a commit: ``ok`` says whether this writer may still commit,
and whatever would take that right away waits until the block ends (see
:meth:`pipeline.lease.Lease.exclusive`)."""


@contextlib.contextmanager
def unfenced() -> Iterator[bool]:
    """The fence of a writer that nothing else competes with: always yes."""
    yield True


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What one batch did: leaves ``first_index .. first_index + appended - 1`` are new."""

    appended: int
    first_index: int
    duplicates: tuple[str, ...]
    """Ids skipped because the log (or the batch) already had them."""
    conflicts: tuple[str, ...]
    """The duplicates whose bytes differ from the leaf logged under the same id."""
    head: SignedHead | None
    """The new signed head; None when the batch added no leaf (its offsets still count)."""


def default_key_path(path: str | Path) -> Path:
    """Where the signing key of the log at ``path`` lives unless told: ``<path>.key``."""
    path = Path(path)
    return path.with_name(f"{path.name}.key")


class AuditLog(AuditReader):
    """The writer of one audit log file; build it with :meth:`open`, close it when done."""

    def __init__(self, conn: sqlite3.Connection, path: Path, signer: Signer,
                 clock: Callable[[], int], fence: Fence = unfenced) -> None:
        super().__init__(conn, path)
        self._signer = signer
        self._clock = clock
        self._fence = fence
        self._data_version = -1  # SQLite's count of other connections' commits, at opening
        self._tree = CompactRange()
        self._head: SignedHead | None = None
        self._pending: list[Leaf] = []
        self._pending_offsets: dict[tuple[str, int], int] = {}
        self._changes = 0  # batches committed by this writer
        self._sealed_at = -1  # ... when it last sealed the file
        self._seal_head: SignedHead | None = None

    @classmethod
    def open(cls, path: str | Path, key: Signer | str | Path | None = None, *,
             clock: Callable[[], int] | None = None, fence: Fence = unfenced) -> AuditLog:
        """Open (or create) the log at ``path`` to append to it, signing with ``key``: a
        Signer, or a key file, made if missing (default :func:`default_key_path`).
        ``clock`` gives head times in Unix ms (default: the wall clock; a head is never
        dated before the previous one). ``fence`` is asked before every commit (see the
        module docstring)."""
        path = Path(path)
        signer = key if isinstance(key, Signer) else \
            Signer.load_or_create(key if key is not None else default_key_path(path))
        conn = open_db(path, readonly=False)
        log = cls(conn, path, signer, clock or (lambda: time.time_ns() // 1_000_000), fence)
        try:
            with sql_errors(f"open the audit log {path}"):
                log._init_schema()
                log._load_tree()
        except BaseException:
            conn.close()
            raise
        return log

    @property
    def head(self) -> SignedHead | None:
        return self._head

    @property
    def signer(self) -> Signer:
        return self._signer

    # -- sink protocol ---------------------------------------------------------------------

    def write(self, leaf: Leaf | None, consumed: tuple[str, int, int] | None = None) -> None:
        """Buffer ``leaf`` for the next batch, and note that the input has been consumed up
        to ``consumed = (topic, partition, next_offset)``; either may be None."""
        self._check_open()
        if leaf is not None:
            self._pending.append(leaf)
        if consumed is not None:
            topic, partition, next_offset = consumed
            self._pending_offsets[(topic, partition)] = next_offset

    def flush(self) -> AppendResult | None:
        """Append what :meth:`write` buffered as one batch (None if there was nothing)."""
        if not self._pending and not self._pending_offsets:
            return None
        leaves, offsets = self._pending, self._pending_offsets
        self._pending, self._pending_offsets = [], {}
        return self.append(leaves, offsets)

    def close(self) -> None:
        """Flush, seal (unless it is sealed as it is, or another process wrote to it since
        this writer opened it), then close the file. Closing twice is harmless."""
        if self._closed:
            return
        try:
            self.flush()
            if self.needs_seal:
                try:
                    self.seal()
                except LogChanged as exc:  # the other writer seals what it wrote
                    logger.warning("%s; not sealed", exc)
        finally:
            super().close()

    def discard(self) -> None:
        """Close without appending what is buffered and without sealing: what a writer
        that lost its right to write does (the next writer reads the input again)."""
        self._pending, self._pending_offsets = [], {}
        super().close()

    @property
    def needs_seal(self) -> bool:
        """Whether the file changed since this writer last sealed it (or it never did)."""
        return self._head is not None and self._sealed_at != self._changes

    @property
    def seal_head(self) -> SignedHead | None:
        """The seal head of this writer's last seal (see :mod:`~pipeline.audit.external`):
        the head to publish so that removing the seal is caught."""
        return self._seal_head

    def seal(self) -> Seal | None:
        """Sign the digest of the whole file at the current head (see
        :mod:`~pipeline.audit.seal`), and a seal head for it (:attr:`seal_head`): costs one
        read of the file; None if a reader held the WAL or the log is empty, and then the
        next call tries again."""
        self._check_open()
        head = self._head
        if head is None:
            return None
        with sql_errors(f"seal the audit log {self.path}"):
            self._check_unchanged()
            seal = seal_file(self._conn, self.path, self._signer, head)
        if seal is not None:
            self._sealed_at = self._changes
            self._seal_head = self._signer.sign_head(
                head.size, head.root, head.hash(), max(self._clock(), head.timestamp_ms))
        return seal

    # -- appending -------------------------------------------------------------------------

    def append(self, leaves: Iterable[Leaf], offsets: Offsets | None = None) -> AppendResult:
        """Append one batch in one transaction; see the module docstring. Leaves buffered
        by :meth:`write` are appended first, as a batch of their own."""
        self._check_open()
        if self._pending or self._pending_offsets:
            self.flush()
        batch = list(leaves)
        if not all(isinstance(leaf, Leaf) for leaf in batch):
            raise AuditError("append takes Leaf objects; build them with Leaf.from_alert_json "
                             "or Leaf.from_checkpoint_json")
        offset_rows = _offset_rows(offsets or {})
        conn = self._conn
        with sql_errors(f"append to the audit log {self.path}"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._check_unchanged()
                result, tree, keys = self._append(batch, offset_rows)
                with self._fence() as allowed:
                    if not allowed:
                        raise WriterFenced(f"this writer may not append to the audit log "
                                           f"{self.path} now (its lease is lost or could not "
                                           "be confirmed); the batch was rolled back")
                    conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        self._changes += 1
        self._ids.extend(key for _, key in keys)
        self._tree = tree
        self._head = result.head or self._head
        return result

    def _append(self, batch: list[Leaf], offset_rows: list[tuple[str, int, int]],
                ) -> tuple[AppendResult, CompactRange, list[tuple[int, int]]]:
        conn = self._conn
        stored = conn.execute("SELECT coalesce(max(idx) + 1, 0) FROM leaves").fetchone()[0]
        if stored != self._tree.size:
            raise LogChanged(f"the audit log {self.path} has {stored} leaves, this writer "
                             f"expected {self._tree.size}: another process appended to it; "
                             "open it again (one auditor appends at a time)")
        keyed = {leaf.id: id_key(leaf.id) for leaf in batch}
        known = {leaf_id: h for leaf_id, (_, h) in self._ids.find(conn, keyed).items()}
        tree = self._tree.copy()
        first = tree.size
        rows: list[tuple[int, str, str, bytes, bytes]] = []
        keys: list[tuple[int, int]] = []
        completed: list[Node] = []
        duplicates: list[str] = []
        conflicts: list[str] = []
        for leaf in batch:
            h = leaf.hash
            prior = known.get(leaf.id)
            if prior is not None:
                duplicates.append(leaf.id)
                if prior != h:
                    conflicts.append(leaf.id)
                continue
            known[leaf.id] = h
            rows.append((tree.size, leaf.kind, leaf.id, leaf.data, h))
            keys.append((tree.size, keyed[leaf.id]))
            tree.append(h, completed)
        head = self._sign(tree) if rows else None
        if head is not None:
            conn.executemany("INSERT INTO leaves (idx, kind, id, data, hash) "
                             "VALUES (?, ?, ?, ?, ?)", rows)
            conn.executemany("INSERT INTO id_keys (idx, key) VALUES (?, ?)", keys)
            conn.executemany("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)",
                             [node for node in completed if node[0] % NODE_STRIDE == 0])
            conn.execute(f"INSERT INTO heads ({HEAD_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                         (head.size, head.root, head.prev, head.timestamp_ms, head.signature))
        conn.executemany("INSERT INTO offsets (topic, partition, next_offset) VALUES (?, ?, ?) "
                         "ON CONFLICT (topic, partition) DO UPDATE SET "
                         "next_offset = excluded.next_offset", offset_rows)
        if conflicts:
            logger.warning("audit log: %d duplicate ids with different content, kept the "
                           "first: %s", len(conflicts), ", ".join(conflicts[:5]))
        result = AppendResult(len(rows), first, tuple(duplicates), tuple(conflicts), head)
        return result, tree, keys

    def _sign(self, tree: CompactRange) -> SignedHead:
        prev = self._head
        timestamp = max(self._clock(), prev.timestamp_ms if prev else 0)
        return self._signer.sign_head(tree.size, tree.root(),
                                      prev.hash() if prev else ZERO_HASH, timestamp)

    def _check_unchanged(self) -> None:
        """LogChanged if another connection committed to the file since this writer opened
        it (inside a write transaction: nobody can until it ends)."""
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            raise LogChanged(f"another process wrote to the audit log {self.path} since this "
                             "writer opened it; nothing was appended: open it again (one "
                             "auditor appends at a time)")

    # -- opening ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise AuditError(f"the audit log {self.path} is closed; open it again to append")

    def _init_schema(self) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                             [("format", FORMAT), ("node_stride", str(NODE_STRIDE)),
                              ("public_key", self._signer.public_hex())])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        meta = self._check_format()
        if meta.get("public_key") != self._signer.public_hex():
            raise AuditError(f"the audit log {self.path} is signed with the key "
                             f"{meta.get('public_key')}, not {self._signer.public_hex()}; "
                             "give the log's own key file")

    def _load_tree(self) -> None:
        # first: a commit by another process after this point is seen at the next append
        self._data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        head = latest_head(self._conn)
        size = head.size if head else 0
        stored = self._conn.execute("SELECT coalesce(max(idx) + 1, 0) FROM leaves").fetchone()[0]
        if stored == size:
            roots = [self._source(level, index) for level, index in decompose(0, size)]
            self._tree = CompactRange(size, roots)
        if stored != size or (head is not None and self._tree.root() != head.root):
            raise AuditError(f"the audit log {self.path} does not match its last signed head "
                             f"({stored} leaves, head size {size}); it was changed outside "
                             "chainwatch: run chainwatch audit verify before appending")
        self._head = head
        self._ids.refresh(self._conn, size)


def _offset_rows(offsets: Offsets) -> list[tuple[str, int, int]]:
    rows = []
    for key, value in offsets.items():
        topic, partition = key
        if not isinstance(topic, str) or type(partition) is not int or type(value) is not int \
                or partition < 0 or value < 0:
            raise AuditError(f"offset {key!r}: {value!r}: expected (topic, partition) -> "
                             "next offset, with integers >= 0")
        rows.append((topic, partition, value))
    return rows
