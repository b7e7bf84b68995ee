"""Reading an audit log: leaves, signed heads, offsets and proofs, while a writer appends.

Any number of processes may read a log while its one writer appends
(:meth:`AuditReader.open`, no key needed; SQLite's WAL lets readers and the writer work at
once). A reader sees whole batches only: leaves, nodes and the head of a batch commit
together. A proof reads O(log n) small rows (see :mod:`pipeline.audit.schema`); checking it
needs no store at all (:mod:`pipeline.audit.proofs`).

A scorer's ``trusted`` check for checkpoints is :meth:`AuditReader.has_checkpoint`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pipeline.audit.errors import AuditError, ProofError
from pipeline.audit.ids import IdIndex
from pipeline.audit.leaves import CHECKPOINT_PREFIX, Leaf, checkpoint_id
from pipeline.audit.merkle import EMPTY_ROOT
from pipeline.audit.proofs import ConsistencyProof, InclusionProof, consistency_path, inclusion_path
from pipeline.audit.schema import (
    FORMAT,
    HEAD_COLUMNS,
    NODE_STRIDE,
    StoredTree,
    head_from_row,
    latest_head,
    open_db,
    sql_errors,
)
from pipeline.audit.signing import SignedHead, load_public_key, public_hex


class AuditReader:
    """Read access to one audit log file; build it with :meth:`open`, close it when done."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._source = StoredTree(conn)
        self._ids = IdIndex()  # loaded on the first look-up by id
        self._closed = False

    @classmethod
    def open(cls, path: str | Path) -> AuditReader:
        """Open the existing log at ``path`` to read it; AuditError if it is none."""
        path = Path(path)
        if not path.is_file():
            raise AuditError(f"no audit log at {path}; check the path")
        conn = open_db(path, readonly=True)
        reader = cls(conn, path)
        try:
            with sql_errors(f"open the audit log {path}"):
                reader._check_format()
        except BaseException:
            conn.close()
            raise
        return reader

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, size={self.size})"

    def close(self) -> None:
        """Close the file. Closing twice is harmless."""
        if not self._closed:
            self._closed = True
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- heads and offsets -----------------------------------------------------------------

    @property
    def head(self) -> SignedHead | None:
        """The latest signed head (None for an empty log)."""
        with sql_errors(f"read the audit log {self.path}"):
            return latest_head(self._conn)

    @property
    def root(self) -> bytes:
        """The root hash of the latest signed head (SHA-256("") for an empty log)."""
        head = self.head
        return head.root if head else EMPTY_ROOT

    @property
    def size(self) -> int:
        """The number of leaves, all covered by :attr:`head`."""
        head = self.head
        return head.size if head else 0

    def heads(self, start: int = 0) -> list[SignedHead]:
        """The signed heads from number ``start`` (0: the first) on, oldest first."""
        with sql_errors(f"read the audit log {self.path}"):
            rows = self._conn.execute(f"SELECT {HEAD_COLUMNS} FROM heads ORDER BY seq "
                                      "LIMIT -1 OFFSET ?", (start,)).fetchall()
        return [head_from_row(row) for row in rows]

    def head_at(self, size: int) -> SignedHead | None:
        """The signed head of the tree of ``size`` leaves, if a batch ended there."""
        with sql_errors(f"read the audit log {self.path}"):
            row = self._conn.execute(f"SELECT {HEAD_COLUMNS} FROM heads WHERE size = ? "
                                     "ORDER BY seq LIMIT 1", (size,)).fetchone()
        return None if row is None else head_from_row(row)

    def offsets(self) -> dict[tuple[str, int], int]:
        """The input consumed by the batches appended so far: ``(topic, partition) -> next
        offset``, where an auditor resumes."""
        with sql_errors(f"read the audit log {self.path}"):
            rows = self._conn.execute("SELECT topic, partition, next_offset FROM offsets "
                                      "ORDER BY topic, partition").fetchall()
        return {(topic, partition): offset for topic, partition, offset in rows}

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The key the log says it is signed with. Verifiers should get the key from a
        trusted place instead (the ``.pub`` file published with the log)."""
        with sql_errors(f"read the audit log {self.path}"):
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'public_key'").fetchone()
        return load_public_key(str(row[0]) if row else "")

    def public_hex(self) -> str:
        return public_hex(self.public_key)

    # -- leaves ----------------------------------------------------------------------------

    def leaf(self, index: int) -> Leaf:
        """The leaf at ``index``; ProofError if there is none."""
        with sql_errors(f"read the audit log {self.path}"):
            row = self._conn.execute("SELECT kind, id, data FROM leaves WHERE idx = ?",
                                     (index,)).fetchone()
        if row is None:
            raise ProofError(f"no leaf {index} in the audit log ({self.size} leaves)")
        return Leaf(*row)

    def index_of(self, leaf_id: str) -> int | None:
        """The index of the leaf with id ``leaf_id``, or None if it is not in the log.

        A checkpoint id is one index look-up. Another id: the first call loads the ids'
        keys (8 bytes a leaf, one sequential read; see :mod:`pipeline.audit.ids`), later
        calls only the keys of the leaves appended since.
        """
        with sql_errors(f"read the audit log {self.path}"):
            if leaf_id.startswith(CHECKPOINT_PREFIX):
                row = self._conn.execute("SELECT idx FROM leaves WHERE kind = 'checkpoint' AND "
                                         "id = ?", (leaf_id,)).fetchone()
                if row is not None and type(row[0]) is not int:
                    raise AuditError(f"the audit log {self.path} holds a leaf index "
                                     f"{row[0]!r}: it is damaged; run chainwatch audit verify")
                return None if row is None else row[0]
            self._ids.refresh(self._conn, self.size)
            found = self._ids.find(self._conn, [leaf_id]).get(leaf_id)
        return None if found is None else found[0]

    def has_checkpoint(self, sha256: str) -> bool:
        """Is the checkpoint with this digest in the log? One index look-up that takes the
        file's word for it: to trust it against a signed head, prove its inclusion."""
        return self.index_of(checkpoint_id(sha256)) is not None

    # -- proofs ----------------------------------------------------------------------------

    def inclusion_proof(self, leaf: int | str, size: int | None = None) -> InclusionProof:
        """The proof that leaf ``leaf`` (an index, or an id) is in the tree of ``size``
        leaves (default: the current size; use the size of the head the client holds)."""
        size = self._size_at_most(size)
        index = self.index_of(leaf) if isinstance(leaf, str) else leaf
        if index is None:
            raise ProofError(f"no leaf with id {leaf!r} in the audit log")
        with sql_errors(f"read the audit log {self.path}"):
            return InclusionProof(index, size, inclusion_path(self._source, index, size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        """The proof that the tree of ``new_size`` leaves (default: the current size)
        extends the tree of ``old_size`` leaves."""
        new_size = self._size_at_most(new_size)
        with sql_errors(f"read the audit log {self.path}"):
            path = consistency_path(self._source, old_size, new_size)
        return ConsistencyProof(old_size, new_size, path)

    def _size_at_most(self, size: int | None) -> int:
        current = self.size
        if size is None:
            return current
        if type(size) is not int or not 0 <= size <= current:
            raise ProofError(f"no tree of size {size!r}: the log has {current} leaves")
        return size

    def _check_format(self) -> dict[str, str]:
        try:
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError as exc:
            raise AuditError(f"{self.path} is not a chainwatch audit log ({exc})") from exc
        if meta.get("format") != FORMAT or meta.get("node_stride") != str(NODE_STRIDE):
            raise AuditError(f"{self.path} is not a {FORMAT} audit log (format "
                             f"{meta.get('format')!r}, node stride {meta.get('node_stride')!r})")
        return meta
