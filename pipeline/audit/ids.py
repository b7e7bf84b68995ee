"""Finding leaves by id without a SQLite index on random keys.

Why
    Leaf ids are hashes, so a B-tree index on them takes every insert at a random place: at
    a million leaves each new leaf dirties an index page of its own, a batch commit writes
    ~4 KiB per leaf to the WAL, and appends fall from ~130k/s to under 30k/s on one disk.
    Leaves, nodes and heads are all appended in order; only this lookup is random, so it
    lives in memory instead.

How
    Each leaf has a 64-bit :func:`id_key` (BLAKE2b of its id) in the append-only ``id_keys``
    table (16 bytes a row, in leaf order, written in the leaf's transaction). An
    :class:`IdIndex` loads them in one sequential read and keeps, per leaf, one 8-byte
    integer ``(top 27 bits of the key) << 36 | index`` in a sorted ``array('q')``, plus a
    small dict of the newest leaves that is merged in when it grows (timsort merges two
    sorted runs in linear time), plus a 16 MiB bitmap of the 27-bit prefixes in use, so
    that a new id (the common case) is known new without a search. A look-up yields the
    indexes whose key prefix matches; :meth:`IdIndex.find` confirms each against the leaf's
    stored id, so a prefix collision (n / 2**27 per look-up) costs one primary-key read
    and never merges two ids. Memory: 16 MiB + 8 bytes a leaf (96 MiB at ten million).
"""

from __future__ import annotations

import hashlib
import sqlite3
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping

INDEX_BITS = 36  # up to 2**36 leaves (68 billion)
PREFIX_BITS = 27  # 27 + 36 = 63 bits: a positive signed 64-bit integer
_MASK = (1 << INDEX_BITS) - 1
_RECENT_MAX = 1 << 18
_CHUNK = 500  # indexes per confirming query (SQLite allows 32766 parameters)


def id_key(leaf_id: str) -> int:
    """The 64-bit key of an id (signed, as SQLite stores integers)."""
    digest = hashlib.blake2b(leaf_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _prefix(key: int) -> int:
    return (key & 0xFFFF_FFFF_FFFF_FFFF) >> (64 - PREFIX_BITS)


class IdIndex:
    """Id look-ups for the leaves ``[0, covered)`` of one log; see the module docstring."""

    def __init__(self) -> None:
        self._used = bytearray()  # the bitmap, made on the first add
        self._sorted = array("q")
        self._recent: dict[int, int | list[int]] = {}
        self.covered = 0

    def refresh(self, conn: sqlite3.Connection, size: int) -> None:
        """Index the leaves from ``covered`` up to ``size`` from the ``id_keys`` table."""
        if size <= self.covered:
            return
        rows = conn.execute("SELECT idx, key FROM id_keys WHERE idx >= ? AND idx < ? "
                            "ORDER BY idx", (self.covered, size))
        keys: list[int] = []
        for idx, key in rows:
            if idx != self.covered + len(keys):
                break  # a gap: reported below
            keys.append(key)
        self.extend(keys)
        if self.covered != size:
            raise sqlite3.DatabaseError(f"the id_keys table lacks leaves {self.covered}.."
                                        f"{size - 1}")

    def add(self, key: int, index: int) -> None:
        """Index leaf ``index`` (the next one: ``covered``) under ``key``."""
        if index != self.covered:
            raise ValueError(f"leaf {index} added to an id index that covers {self.covered}")
        self.extend([key])

    def extend(self, keys: Iterable[int]) -> None:
        """Index the next leaves, from ``covered`` on, under ``keys``."""
        if not self._used:
            self._used = bytearray(1 << (PREFIX_BITS - 3))
        used, recent, index = self._used, self._recent, self.covered
        for key in keys:
            prefix = (key & 0xFFFF_FFFF_FFFF_FFFF) >> (64 - PREFIX_BITS)
            used[prefix >> 3] |= 1 << (prefix & 7)
            found = recent.get(prefix)
            if found is None:
                recent[prefix] = index
            elif isinstance(found, list):
                found.append(index)
            else:
                recent[prefix] = [found, index]
            index += 1
            if len(recent) >= _RECENT_MAX:
                self.covered = index
                self._merge()
                recent = self._recent
        self.covered = index

    def candidates(self, key: int) -> list[int]:
        """The indexes of the leaves whose key prefix is ``key``'s: a superset of the
        leaves with this exact id."""
        prefix = _prefix(key)
        if not self._used or not self._used[prefix >> 3] >> (prefix & 7) & 1:
            return []
        found = self._recent.get(prefix)
        out = [] if found is None else found[:] if isinstance(found, list) else [found]
        values = self._sorted
        i = bisect_left(values, prefix << INDEX_BITS)
        while i < len(values) and values[i] >> INDEX_BITS == prefix:
            out.append(values[i] & _MASK)
            i += 1
        return out

    def find(self, conn: sqlite3.Connection,
             ids: Iterable[str] | Mapping[str, int]) -> dict[str, tuple[int, bytes]]:
        """``id -> (index, leaf hash)`` for each of ``ids`` that the indexed leaves have
        (``ids`` may map each id to its :func:`id_key`, to save computing it again)."""
        keyed = ids if isinstance(ids, Mapping) else {i: id_key(i) for i in ids}
        wanted: dict[int, set[str]] = {}
        for leaf_id, key in keyed.items():
            for index in self.candidates(key):
                wanted.setdefault(index, set()).add(leaf_id)
        found: dict[str, tuple[int, bytes]] = {}
        listed = sorted(wanted)
        for start in range(0, len(listed), _CHUNK):
            chunk = listed[start:start + _CHUNK]
            rows = conn.execute(f"SELECT idx, id, hash FROM leaves WHERE idx IN "
                                f"({','.join('?' * len(chunk))})", chunk)
            for index, leaf_id, h in rows:
                if leaf_id in wanted[index]:
                    found[leaf_id] = (index, h)
        return found

    def _merge(self) -> None:
        fresh: list[int] = []
        for prefix, found in self._recent.items():
            for index in found if isinstance(found, list) else (found,):
                fresh.append(prefix << INDEX_BITS | index)
        fresh.sort()
        merged = self._sorted.tolist()
        merged += fresh
        merged.sort()  # two sorted runs: one linear merge
        self._sorted = array("q", merged)
        self._recent = {}
