"""Inclusion and consistency proofs (RFC 9162 §2.1.3, §2.1.4): building and checking them.

Building
    :func:`inclusion_path` and :func:`consistency_path` follow the RFC's recursive
    definitions (``PATH`` and ``SUBPROOF``) iteratively, and ask a :data:`NodeSource` for the
    hash of each perfect subtree they need (``(level, index) -> hash``). Every subtree of
    the recursion is a fold of at most ``log2 n`` perfect subtrees (:func:`~pipeline.audit.
    merkle.decompose`), so a proof costs O(log n) look-ups however the source stores them:
    :class:`HashList` reduces an in-memory list, the SQLite store reads its node table.

Checking
    :func:`verify_inclusion_path` and :func:`verify_consistency_path` are the RFC's
    verification algorithms (§2.1.3.2, §2.1.4.2) over bare hashes; :func:`verify_inclusion`
    and :func:`verify_consistency` add what a client holds: a public key, signed heads and
    the leaf. All four return False for anything wrong or malformed and never raise.

>>> from pipeline.audit.merkle import root_of
>>> leaves = [leaf_hash(bytes([i])) for i in range(5)]
>>> source = HashList(leaves)
>>> path = inclusion_path(source, 3, 5)
>>> verify_inclusion_path(leaves[3], 3, 5, path, root_of(leaves))
True
>>> verify_consistency_path(2, 5, consistency_path(source, 2, 5), root_of(leaves[:2]),
...                         root_of(leaves))
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.audit.errors import AuditError, ProofError
from pipeline.audit.leaves import Leaf
from pipeline.audit.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    decompose,
    fold,
    leaf_hash,
    node_hash,
    perfect_root,
    split_point,
)
from pipeline.audit.signing import PublicKeyLike, SignedHead, verify_head

NodeSource = Callable[[int, int], bytes]
"""``source(level, index)``: the hash of the perfect subtree of ``2**level`` leaves from
``index * 2**level``; it is only asked for subtrees that lie inside the tree."""


class HashList:
    """A :data:`NodeSource` over an in-memory list of leaf hashes (tests, small trees)."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self._leaves = list(leaf_hashes)
        self._memo: dict[tuple[int, int], bytes] = {}

    def __call__(self, level: int, index: int) -> bytes:
        key = (level, index)
        if key not in self._memo:
            first = index << level
            self._memo[key] = perfect_root(self._leaves[first:first + (1 << level)])
        return self._memo[key]


def subtree_root(source: NodeSource, start: int, end: int) -> bytes:
    """``MTH(D[start:end])`` for a subtree of the RFC recursion (see ``decompose``)."""
    return fold(source(level, index) for level, index in decompose(start, end))


def inclusion_path(source: NodeSource, index: int, size: int) -> tuple[bytes, ...]:
    """RFC 9162 §2.1.3.1 ``PATH(index, D[0:size])``: sibling hashes, leaf level first."""
    if not 0 <= index < size:
        raise ProofError(f"no leaf {index} in a tree of {size} leaves; ask for an index "
                         f"below the tree size")
    siblings: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = split_point(hi - lo)
        if index < lo + k:
            siblings.append(subtree_root(source, lo + k, hi))
            hi = lo + k
        else:
            siblings.append(subtree_root(source, lo, lo + k))
            lo += k
    return tuple(reversed(siblings))


def consistency_path(source: NodeSource, old_size: int, new_size: int) -> tuple[bytes, ...]:
    """RFC 9162 §2.1.4.1 ``PROOF(old_size, D[0:new_size])`` (empty when there is nothing to
    prove: an empty old tree, or equal sizes)."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to size {new_size}; "
                         "the old size must be between 0 and the new size")
    if old_size in (0, new_size):
        return ()
    siblings: list[bytes] = []
    lo, hi, whole = 0, new_size, True  # whole: D[lo:hi] starts at 0 (the RFC's b = true)
    while old_size - lo != hi - lo:
        k = split_point(hi - lo)
        if old_size - lo <= k:
            siblings.append(subtree_root(source, lo + k, hi))
            hi = lo + k
        else:
            siblings.append(subtree_root(source, lo, lo + k))
            lo += k
            whole = False
    base = [] if whole else [subtree_root(source, lo, hi)]
    return (*base, *reversed(siblings))


def _is_hash(value: object) -> bool:
    return type(value) is bytes and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    return type(value) is int and 0 <= value < 2**64


def _is_path(path: object) -> bool:
    return isinstance(path, tuple | list) and len(path) <= 130 and all(map(_is_hash, path))


def verify_inclusion_path(leaf: bytes, index: int, size: int, path: Sequence[bytes],
                          root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``path`` prove leaf hash ``leaf`` at ``index`` under ``root``?"""
    if not (_is_hash(leaf) and _is_hash(root) and _is_size(index) and _is_size(size)
            and _is_path(path) and index < size):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency_path(old_size: int, new_size: int, path: Sequence[bytes],
                            old_root: bytes, new_root: bytes) -> bool:
    """RFC 9162 §2.1.4.2: does ``path`` prove the tree at ``new_root`` extends ``old_root``?

    An empty old tree is consistent with every tree (its root must be SHA-256("")), and a
    tree only with itself; both take an empty path.
    """
    if not (_is_hash(old_root) and _is_hash(new_root) and _is_size(old_size)
            and _is_size(new_size) and _is_path(path) and old_size <= new_size):
        return False
    if old_size == 0:
        return not path and old_root == EMPTY_ROOT
    if old_size == new_size:
        return not path and old_root == new_root
    if not path:
        return False
    hashes = list(path)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new tree
        hashes.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = hashes[0]
    for c in hashes[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Leaf ``index`` is in the tree of ``size`` leaves: the audit path, leaf level first."""

    index: int
    size: int
    path: tuple[bytes, ...]

    def to_json(self) -> bytes:
        return orjson.dumps({"index": self.index, "size": self.size,
                             "path": [h.hex() for h in self.path]}, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes | str) -> InclusionProof:
        """The proof of :meth:`to_json`; AuditError if ``data`` is not one."""
        obj = _load(data, {"index", "size", "path"}, "inclusion proof")
        return cls(index=_int(obj, "index"), size=_int(obj, "size"), path=_path(obj))


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """The tree of ``new_size`` leaves extends the one of ``old_size``: RFC 9162 hashes."""

    old_size: int
    new_size: int
    path: tuple[bytes, ...]

    def to_json(self) -> bytes:
        return orjson.dumps({"old_size": self.old_size, "new_size": self.new_size,
                             "path": [h.hex() for h in self.path]}, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes | str) -> ConsistencyProof:
        """The proof of :meth:`to_json`; AuditError if ``data`` is not one."""
        obj = _load(data, {"old_size", "new_size", "path"}, "consistency proof")
        return cls(old_size=_int(obj, "old_size"), new_size=_int(obj, "new_size"),
                   path=_path(obj))


def verify_inclusion(public_key: PublicKeyLike, head: SignedHead, leaf: Leaf | bytes,
                     proof: InclusionProof) -> bool:
    """Is ``leaf`` (a :class:`Leaf` or its bytes) in the log that signed ``head``?

    Needs only the log's public key: the head must be signed by it, ``proof.size`` must be
    the head's size, and the audit path must lead from the leaf's hash to the head's root.
    """
    try:
        data = leaf.data if isinstance(leaf, Leaf) else leaf
        return (isinstance(proof, InclusionProof) and type(data) is bytes
                and verify_head(public_key, head) and proof.size == head.size
                and verify_inclusion_path(leaf_hash(data), proof.index, proof.size,
                                          proof.path, head.root))
    except Exception:  # garbage of any shape is a "no", never a traceback
        return False


def verify_consistency(public_key: PublicKeyLike, old_head: SignedHead, new_head: SignedHead,
                       proof: ConsistencyProof) -> bool:
    """Is the log at ``new_head`` an append-only extension of the log at ``old_head``?"""
    try:
        return (isinstance(proof, ConsistencyProof)
                and verify_head(public_key, old_head) and verify_head(public_key, new_head)
                and (proof.old_size, proof.new_size) == (old_head.size, new_head.size)
                and verify_consistency_path(proof.old_size, proof.new_size, proof.path,
                                            old_head.root, new_head.root))
    except Exception:
        return False


def _load(data: bytes | str, fields: set[str], what: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise AuditError(f"not a JSON {what}: {exc}") from exc
    if not isinstance(obj, dict) or set(obj) != fields:
        raise AuditError(f"a {what} has exactly the fields {sorted(fields)}")
    return obj


def _int(obj: dict[str, Any], name: str) -> int:
    value = obj[name]
    if not _is_size(value):
        raise AuditError(f"proof field {name!r}: expected an integer >= 0, got {value!r}")
    return int(value)


def _path(obj: dict[str, Any]) -> tuple[bytes, ...]:
    path = obj["path"]
    try:
        hashes = tuple(bytes.fromhex(h) for h in path)
    except (TypeError, ValueError) as exc:
        raise AuditError(f"proof path: expected a list of hex hashes ({exc})") from exc
    if not isinstance(path, list) or not _is_path(hashes):
        raise AuditError(f"proof path: expected a list of {HASH_SIZE}-byte hex hashes")
    return hashes
