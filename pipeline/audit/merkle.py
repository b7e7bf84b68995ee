"""The Merkle tree of RFC 6962 / RFC 9162 §2.1: hashes, tree heads, and an incremental tree.

Hashes
    ``leaf_hash(d) = SHA-256(0x00 ‖ d)`` and ``node_hash(l, r) = SHA-256(0x01 ‖ l ‖ r)``: the
    prefixes keep a leaf from ever passing for an inner node. The root of the empty tree is
    ``SHA-256("")``; the root of ``n > 1`` leaves splits them at ``k``, the largest power of
    two smaller than ``n``: ``MTH(D[0:n]) = node_hash(MTH(D[0:k]), MTH(D[k:n]))``.

Perfect subtrees
    A tree of any size is made of *perfect* subtrees, one for each set bit of its size,
    largest first: 13 leaves = 8 + 4 + 1. A perfect subtree is named by ``(level, index)``:
    it covers the ``2**level`` leaves from ``index * 2**level``; the root of the whole tree is
    the right-to-left fold of these with ``node_hash``. Every perfect subtree is complete the
    moment its last leaf arrives and never changes after, so a store can keep the hashes of
    some of them and answer proofs from those (see :mod:`pipeline.audit.proofs`).

Incremental tree
    :class:`CompactRange` keeps only those roots (at most 64 hashes): appending a leaf merges
    the equal-sized subtrees at the right end (one hash per merge, one on average), and the
    root of the new size is a fold of at most ``log2 n`` hashes. Nothing is ever rehashed.

>>> EMPTY_ROOT.hex()[:16]
'e3b0c44298fc1c14'
>>> tree = CompactRange()
>>> for data in (b"a", b"b", b"c"):
...     tree.append(leaf_hash(data))
>>> tree.size, [level for level, _ in tree.subtrees()]
(3, [1, 0])
>>> tree.root() == node_hash(node_hash(leaf_hash(b"a"), leaf_hash(b"b")), leaf_hash(b"c"))
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
ZERO_HASH = bytes(HASH_SIZE)

Node = tuple[int, int, bytes]
"""A perfect subtree with its hash: ``(level, index, hash)``."""


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 ‖ data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 inner node hash: SHA-256(0x01 ‖ left ‖ right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``): where MTH splits ``D[0:n]``.

    >>> [split_point(n) for n in (2, 3, 4, 5, 8, 9)]
    [1, 2, 2, 4, 4, 8]
    """
    return 1 << ((n - 1).bit_length() - 1)


def decompose(start: int, end: int) -> list[tuple[int, int]]:
    """``(level, index)`` of the perfect subtrees that make up ``D[start:end]``, left to right.

    ``start`` must be a multiple of the largest power of two not above ``end - start``, as
    every subtree of the RFC's recursion is; then the sizes are the set bits of
    ``end - start``, largest first, and ``MTH(D[start:end])`` is their right-to-left fold.

    >>> decompose(8, 13)
    [(2, 2), (0, 12)]
    """
    parts: list[tuple[int, int]] = []
    size = end - start
    while size:
        level = size.bit_length() - 1
        parts.append((level, start >> level))
        start += 1 << level
        size -= 1 << level
    return parts


def fold(hashes: Iterable[bytes]) -> bytes:
    """The right-to-left ``node_hash`` fold of perfect-subtree roots, largest first."""
    stack = list(hashes)
    if not stack:
        return EMPTY_ROOT
    root = stack.pop()
    while stack:
        root = node_hash(stack.pop(), root)
    return root


def perfect_root(hashes: list[bytes]) -> bytes:
    """The root of a perfect subtree from its ``2**k`` hashes one level down (or more)."""
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


def root_of(leaf_hashes: Iterable[bytes]) -> bytes:
    """MTH of a whole tree given its leaf hashes, in O(n) with O(log n) memory."""
    tree = CompactRange()
    for h in leaf_hashes:
        tree.append(h)
    return tree.root()


class CompactRange:
    """The roots of the perfect subtrees of a growing tree ``[0, size)``, largest first.

    ``append`` adds a leaf hash and, if ``completed`` is given, appends to it every perfect
    subtree of level 1 or more that the new leaf completes, as ``(level, index, hash)``,
    smallest first. Build one for an existing tree with ``CompactRange(size, roots)`` where
    ``roots`` are the hashes of ``decompose(0, size)``.
    """

    __slots__ = ("_roots", "_size")

    def __init__(self, size: int = 0, roots: Iterable[bytes] = ()) -> None:
        self._size = size
        self._roots = list(roots)
        if size < 0 or len(self._roots) != size.bit_count():
            raise ValueError(f"a tree of {size} leaves has {size.bit_count()} perfect "
                             f"subtrees, got {len(self._roots)} hashes")

    @property
    def size(self) -> int:
        return self._size

    def subtrees(self) -> list[tuple[int, bytes]]:
        """``(level, hash)`` of each perfect subtree, largest first."""
        levels = [level for level, _ in decompose(0, self._size)]
        return list(zip(levels, self._roots, strict=True))

    def append(self, leaf: bytes, completed: list[Node] | None = None) -> None:
        roots = self._roots
        position = self._size
        h = leaf
        level = 0
        while position & 1:  # one merge per trailing set bit of the old size
            h = node_hash(roots.pop(), h)
            level += 1
            position >>= 1
            if completed is not None:
                completed.append((level, position, h))
        roots.append(h)
        self._size += 1

    def root(self) -> bytes:
        """MTH of the whole tree: the fold of its perfect-subtree roots (empty: SHA-256(""))."""
        return fold(self._roots)

    def copy(self) -> CompactRange:
        return CompactRange(self._size, self._roots)

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()[:16]}…)"
