"""Full verification of an audit log file: every leaf, every stored node, every signed head.

:func:`verify_store` reads the file through a read-only connection and trusts nothing in
it but what it can recompute. It checks, in leaf order, and stops at the first problem:

1. the file is a readable SQLite database that passes ``PRAGMA integrity_check`` and holds
   a chainwatch audit log; otherwise the result is *unreadable*;
2. leaf indexes run 0, 1, 2, ... without a gap;
3. each leaf's bytes re-parse canonically (:meth:`~pipeline.audit.leaves.Leaf.decode`),
   say the stored kind and id, and hash to the stored leaf hash; its id is not an earlier
   leaf's, and its key in ``id_keys`` is right (the writer de-duplicates with them);
4. each stored node hash equals the one rebuilt from the leaves (proofs are served from
   them), which also narrows a changed, inserted, removed or reordered leaf to 16 leaves;
5. each signed head, when the rebuilt tree reaches its size: well formed, signed by the
   given public key, linked to the previous head's hash, not older than it, and carrying
   the rebuilt root; sizes only grow, the last head covers every leaf, and no head claims
   more leaves than there are;
6. the heads kept outside the file (``external_heads``: what the auditor published to
   ``chainwatch.audit``, or what a person saved), see :mod:`~pipeline.audit.external`:
   each must be signed by the key; a store with fewer leaves than one of them was rolled
   back, one whose tree at that size has another root was rewritten, and one at the size of
   a *seal head* must carry a seal there (else it was removed: step 7 says so);
7. the file seal (:mod:`~pipeline.audit.seal`): a ``seal`` table without its record, or with
   one that is neither the placeholder nor a seal, is a removed or damaged seal; a seal for
   the current size must be signed by the key and match the SHA-256 of every byte of the
   main file, free space and header included. That digest is checked whatever lies beside
   the file: a WAL of commits made since the seal leaves the file's bytes as they were
   sealed (its frames were checked as entries in steps 2 to 5), and a stray one cannot
   make a changed file pass for one "being written".

Why step 6: whoever can write the file can roll all of it back together, to any earlier
state that verifies, seal included (dropping the ``seal`` table leaves a file that looks
never sealed). Nothing inside the file can tell, so the result says plainly when no
external head was given (:data:`~pipeline.audit.external.NO_EXTERNAL_HEAD`).

The result names the first bad entry (leaf index, leaf id, head number) and what differs,
and prints on one line. Only the public key comes from the caller: give it from a trusted
place, not from the log. It reads one snapshot, so it can check a log while the auditor
appends to it. It never raises for anything in the file: a file SQLite cannot read, or
that makes it fail mid-way (including errors it words in bytes that are not UTF-8), is
*unreadable*.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pipeline.audit.errors import LeafError
from pipeline.audit.external import NO_EXTERNAL_HEAD, WalkFacts, check_external
from pipeline.audit.ids import IdIndex, id_key
from pipeline.audit.leaves import Leaf
from pipeline.audit.merkle import HASH_SIZE, ZERO_HASH, CompactRange, Node, leaf_hash
from pipeline.audit.schema import (
    DAMAGE,
    FORMAT,
    HEAD_COLUMNS,
    NODE_STRIDE,
    TABLES,
    connect,
    head_from_row,
)
from pipeline.audit.seal import file_digest, seal_record
from pipeline.audit.signing import (
    PublicKeyLike,
    SignedHead,
    load_public_key,
    public_hex,
    verify_head,
)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of :func:`verify_store`: ``ok``, or the first problem and where it is."""

    ok: bool
    size: int
    """Leaves verified: the log's size when ok, else the leaves checked before the problem."""
    root: bytes | None
    """The root at ``size`` (the last head's root when ok)."""
    heads: int
    """Signed heads verified."""
    problem: str | None = None
    index: int | None = None
    """The first bad leaf, or the first leaf of the range a bad root or node covers."""
    leaf_id: str | None = None
    head: int | None = None
    """The number of the bad signed head (0: the first), when a head is at fault."""
    unreadable: bool = False
    sealed: bool = False
    """Every byte of the file matched its signed seal (see :mod:`~pipeline.audit.seal`)."""
    note: str = ""
    external: str = NO_EXTERNAL_HEAD
    """What the log was held to outside itself (:mod:`~pipeline.audit.external`)."""

    def __str__(self) -> str:
        """One line, whatever the problem's text (SQLite quotes schema lines in errors)."""
        return " ".join(self._text().split())

    def _text(self) -> str:
        if self.ok:
            root = self.root.hex() if self.root else "-"
            sealed = self.note or "every byte of the file matches its seal"
            return (f"OK: {self.size} leaves, {self.heads} signed heads, root {root}; "
                    f"{sealed}; {self.external}")
        if self.unreadable:
            return f"UNREADABLE: {self.problem}"
        where = [f"leaf {self.index}" if self.index is not None else "",
                 f"id {self.leaf_id}" if self.leaf_id else "",
                 f"head {self.head}" if self.head is not None else ""]
        place = ", ".join(w for w in where if w)
        return f"FAILED{f' at {place}' if place else ''}: {self.problem}"


class _Problem(Exception):
    def __init__(self, problem: str, index: int | None = None, leaf_id: str | None = None,
                 head: int | None = None) -> None:
        super().__init__(problem)
        self.problem, self.index, self.leaf_id, self.head = problem, index, leaf_id, head


def verify_store(path: str | Path, *, public_key: PublicKeyLike,
                 external_heads: Sequence[SignedHead] = ()) -> VerifyResult:
    """Check the whole log at ``path`` against ``public_key``, and against
    ``external_heads`` (heads kept outside the file) when given; see the module docstring.

    Never raises for anything in the file; AuditKeyError if ``public_key`` is not a key.
    """
    key = load_public_key(public_key)
    path = Path(path)
    if not path.is_file():
        return _unreadable(f"no audit log file at {path}")
    try:
        conn = connect(path, readonly=True)
    except DAMAGE as exc:
        return _unreadable(f"{path} cannot be opened as SQLite: {exc}")
    walk = _Walk(conn, key, {head.size for head in external_heads})
    try:
        conn.execute("BEGIN")  # one snapshot for every query, while a writer appends
        result = walk.run()
        external = check_external(result.size, walk.facts, external_heads, key)
        if external.problem:
            return replace(result, ok=False, problem=external.problem)
        return _check_seal(replace(result, external=external.checked), conn, path, key,
                           external.seal_required)
    except _Problem as bad:
        return VerifyResult(False, walk.tree.size, walk.tree.root(), walk.heads, bad.problem,
                            bad.index, bad.leaf_id, bad.head)
    except DAMAGE as exc:
        return _unreadable(f"{path} is not a readable SQLite database: {exc}")
    except Exception as exc:  # whatever a damaged file does, the answer is "not ok"
        return _unreadable(f"{path} could not be read to the end: {type(exc).__name__}: {exc}")
    finally:
        conn.close()


def _check_seal(result: VerifyResult, conn: sqlite3.Connection, path: Path,
                key: Ed25519PublicKey, seal_required: str) -> VerifyResult:
    """Step 6: the bytes no entry accounts for, through the file's signed seal."""
    seal, damaged = seal_record(conn)
    failed = replace(result, ok=False)
    if damaged:
        return replace(failed, problem=damaged)
    if seal is None:
        if seal_required:
            return replace(failed, problem=f"the file seal was removed: {seal_required}, "
                           "but the file has no seal")
        return replace(result, note="the file is not sealed (the auditor seals it when idle "
                       "and on stop), so bytes outside the entries were not checked")
    if not seal.signed_by(key):
        return replace(failed, problem="the file seal is not signed by the given key")
    if seal.size > result.size:
        return replace(failed, problem=f"the file seal is for {seal.size} leaves but the log "
                       f"has {result.size}: leaves were removed from its end")
    if seal.size < result.size or (seal_required and seal.size != result.size):
        if seal_required:
            return replace(failed, problem=f"the file seal was replaced: {seal_required}, "
                           f"but the file's seal is for {seal.size} leaves")
        return replace(result, note=f"the file seal covers the first {seal.size} leaves; the "
                       "log grew since (the auditor seals it again when idle)")
    if seal.root != result.root:
        return replace(failed, problem="the file seal's root differs from the log's root")
    # The seal is over the main file's bytes, so they are checked whatever lies beside it: a
    # WAL of later commits (then the file holds the sealed state and the WAL's frames were
    # checked as entries), or a stray one put there to make a changed file look "in use".
    if file_digest(path, conn) != seal.digest:
        return replace(failed, problem="the file differs from its signed seal: a byte that "
                       "no entry accounts for (SQLite free space, a stale cell copy or the "
                       "file header) was changed")
    wal = Path(f"{path}-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        return replace(result, sealed=True, note=f"the file matches its seal; beside it, "
                       f"{wal.name} holds {wal.stat().st_size} bytes of commits made since, "
                       "checked as entries only")
    return replace(result, sealed=True)


def _unreadable(problem: str) -> VerifyResult:
    return VerifyResult(False, 0, None, 0, problem, unreadable=True)


class _Walk:
    def __init__(self, conn: sqlite3.Connection, key: Ed25519PublicKey,
                 sizes: set[int]) -> None:
        self.conn = conn
        self.key = key
        self.sizes = sizes
        self.facts = WalkFacts()
        self.tree = CompactRange()
        self.ids = IdIndex()
        self.heads = 0
        self.last: SignedHead | None = None

    def run(self) -> VerifyResult:
        self._check_file()
        heads = self._heads()
        pending = next(heads, None)
        nodes = self._node_cursors()
        completed: list[Node] = []
        rows = self.conn.execute("SELECT l.idx, l.kind, l.id, l.data, l.hash, k.key FROM leaves "
                                 "AS l LEFT JOIN id_keys AS k ON k.idx = l.idx ORDER BY l.idx")
        for row in rows:
            index = self.tree.size
            h = self._leaf(index, row[:5])
            self._unique(index, row[2], row[5])
            self.tree.append(h, completed)
            if self.tree.size in self.sizes:
                self.facts.roots[self.tree.size] = self.tree.root()
            for level, node_index, node in completed:
                if level % NODE_STRIDE == 0:
                    self._node(nodes, level, node_index, node)
            completed.clear()
            while pending is not None and pending[1].size <= self.tree.size:
                self._head(*pending)
                pending = next(heads, None)
        if pending is not None:
            raise _Problem(f"head {pending[0]} claims {pending[1].size} leaves but the log has "
                           f"only {self.tree.size}: leaves were removed from its end",
                           index=self.tree.size, head=pending[0])
        covered = self.last.size if self.last else 0
        if self.tree.size > covered:
            raise _Problem(f"leaves {covered}..{self.tree.size - 1} are not covered by any "
                           "signed head: they were added outside chainwatch", index=covered)
        keys = self.conn.execute("SELECT count(*), max(idx) FROM id_keys").fetchone()
        if keys != (self.tree.size, self.tree.size - 1 if self.tree.size else None):
            raise _Problem(f"the id_keys table has {keys[0]} rows up to index {keys[1]} for "
                           f"{self.tree.size} leaves: it was altered", index=self.tree.size)
        for level, cursor in nodes.items():
            extra = next(cursor, None)
            if extra is not None:
                raise _Problem(f"stored node {level}/{extra[0]} lies beyond the log's "
                               f"{self.tree.size} leaves: the node table was altered")
        return VerifyResult(True, self.tree.size, self.tree.root(), self.heads)

    def _check_file(self) -> None:
        check = [str(row[0]) for row in self.conn.execute("PRAGMA integrity_check(5)")]
        if check != ["ok"]:
            raise sqlite3.DatabaseError(f"integrity check failed: {'; '.join(check)}")
        tables = {row[0] for row in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not set(TABLES) <= tables:
            raise sqlite3.DatabaseError(f"it is not a chainwatch audit log (tables "
                                        f"{sorted(tables)})")
        meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != FORMAT or meta.get("node_stride") != str(NODE_STRIDE):
            raise sqlite3.DatabaseError(f"it is not a {FORMAT} log (meta {meta})")
        if meta.get("public_key") != public_hex(self.key):
            raise _Problem(f"the log says it is signed by {meta.get('public_key')!r}, not by "
                           f"the key given ({public_hex(self.key)})")

    def _heads(self) -> Iterator[tuple[int, SignedHead]]:
        cursor = self.conn.execute(f"SELECT seq, {HEAD_COLUMNS} FROM heads ORDER BY seq")
        for number, row in enumerate(cursor):
            yield number, head_from_row(row[1:])

    def _node_cursors(self) -> dict[int, Iterator[tuple[int, bytes]]]:
        levels = [row[0] for row in self.conn.execute("SELECT DISTINCT level FROM nodes")]
        for level in levels:
            if type(level) is not int or level <= 0 or level % NODE_STRIDE:
                raise _Problem(f"the node table holds level {level!r}, which the log never "
                               "stores: the node table was altered")
        return {level: iter(self.conn.execute(
            "SELECT idx, hash FROM nodes WHERE level = ? ORDER BY idx", (level,)))
            for level in levels}

    def _leaf(self, index: int, row: tuple[object, ...]) -> bytes:
        idx, kind, leaf_id, data, stored = row
        shown = leaf_id if isinstance(leaf_id, str) else None
        if idx != index:
            raise _Problem(f"leaf {index} is missing: the next stored index is {idx!r} (index "
                           "gap: an entry was deleted or renumbered)", index=index)
        if type(data) is not bytes or type(stored) is not bytes or len(stored) != HASH_SIZE:
            raise _Problem("leaf data or hash is not stored as bytes of the right size",
                           index=index, leaf_id=shown)
        try:
            leaf = Leaf.decode(data)
        except LeafError as exc:
            raise _Problem(f"leaf bytes do not re-parse: {exc}", index, shown) from exc
        if (leaf.kind, leaf.id) != (kind, leaf_id):
            raise _Problem(f"stored kind/id {kind!r}/{leaf_id!r} differ from what the leaf "
                           f"bytes say ({leaf.kind!r}/{leaf.id!r})", index, shown)
        h = leaf_hash(data)
        if h != stored:
            raise _Problem(f"leaf hash differs: stored {stored.hex()}, the leaf bytes hash to "
                           f"{h.hex()}", index, shown)
        return h

    def _unique(self, index: int, leaf_id: str, stored_key: object) -> None:
        """The id of leaf ``index`` is new, and its key in ``id_keys`` is right."""
        key = id_key(leaf_id)
        if stored_key != key:
            raise _Problem(f"the id key stored for this leaf is {stored_key!r}, not {key}: the "
                           "id_keys table was altered", index, leaf_id)
        if self.ids.candidates(key):  # rarely: only then read the earlier leaves' ids
            earlier = self.ids.find(self.conn, {leaf_id: key}).get(leaf_id)
            if earlier is not None:
                raise _Problem(f"leaf {index} repeats the id of leaf {earlier[0]}: ids are "
                               "unique in a log", index, leaf_id)
        self.ids.add(key, index)

    def _node(self, nodes: dict[int, Iterator[tuple[int, bytes]]], level: int, index: int,
              node: bytes) -> None:
        first, last = index << level, ((index + 1) << level) - 1
        stored = next(nodes[level], None) if level in nodes else None
        if stored is None or stored[0] != index:
            raise _Problem(f"stored node {level}/{index} (leaves {first}..{last}) is missing: "
                           "the node table was altered", index=first)
        if stored[1] != node:
            raise _Problem(f"stored node {level}/{index} differs from the one rebuilt from "
                           f"leaves {first}..{last}: a leaf there was changed, inserted, "
                           "removed or reordered, or the node table was altered", index=first)

    def _head(self, number: int, head: SignedHead) -> None:
        start = self.last.size if self.last else 0
        if not verify_head(self.key, head):
            raise _Problem(f"head {number} signature invalid (or the head is malformed)",
                           index=start, head=number)
        if head.size <= start or head.size != self.tree.size:
            raise _Problem(f"head {number} has size {head.size}, not more than the previous "
                           f"head's {start}: heads were reordered or altered", head=number)
        if head.prev != (self.last.hash() if self.last else ZERO_HASH):
            raise _Problem(f"previous-head hash broken: head {number} does not link head "
                           f"{number - 1} (a head was removed, inserted or altered)",
                           index=start, head=number)
        if self.last and head.timestamp_ms < self.last.timestamp_ms:
            raise _Problem(f"head {number} is older than head {number - 1}", head=number)
        if head.root != self.tree.root():
            raise _Problem(f"head {number} root differs at size {head.size}: a leaf in "
                           f"{start}..{head.size - 1} was changed, inserted, removed or "
                           "reordered", index=start, head=number)
        self.last = head
        self.heads += 1
        self.facts.head_sizes[head.hash()] = head.size
