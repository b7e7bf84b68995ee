"""Task state as plain data: a versioned msgpack encoding, and the helpers components share.

A scorer task's checkpoint is no longer a pickle of its object graph (which broke whenever a
class moved or river changed). Each stateful component says what it holds with ``state()``,
a small tree of plain data, and takes it back with ``load_state(state)`` into an instance
built from configuration (constructor arguments are never part of the state). This module
turns such a tree into bytes and back.

Format (state format version 2; version 1 was the pickled object graph)
    ``CWSTATE2\\n`` then one msgpack object: the tree. Allowed in a tree: dict (str keys),
    list, str, int, float, bool, None, bytes. An int beyond 64 bits travels as msgpack
    extension type 1 (its two's-complement big-endian bytes), so every Python int comes back
    exact; floats are 64-bit, so they do too (NaN and infinities included). A tuple is
    written as a list and **comes back as a list**: a component's ``load_state`` must turn
    lists back into tuples where it needs them. Bytes of another state format are refused
    with a :class:`StateError` naming it (:func:`format_of` tells it without decoding), and
    nothing in them is ever interpreted as code.

Components
    Every component's dict carries its own ``"v"``, the version of its layout;
    :func:`fields` checks it and the keys in one go and raises a one-line StateError for a
    missing, unknown or mistyped entry, so a loader reads top to bottom.

River estimators (the one place pickle remains)
    Half-Space Trees, the scalers, the logistic regression pipeline and ADWIN have no public
    state API, so :func:`river_blob` saves one as ``{"pickle": bytes, "river": version}``.
    :func:`river_estimator` unpickles such a blob only when it was written under the river
    version installed now (else a StateError naming both, so the caller can start that
    component fresh). It is only ever called on bytes the
    :class:`~pipeline.checkpoints.CheckpointStore` authenticated (their HMAC-SHA256 tag
    verified with the scorers' checkpoint key) or whose digest the audit log proved: never
    on bytes anyone who can write to the store could have made.

>>> data = encode({"v": 1, "big": 2**200 + 1, "pair": (1, "a"), "raw": b"\\x00", "x": 0.1})
>>> data[:9], decode(data)
(b'CWSTATE2\\n', {'v': 1, 'big': 1606938044258990275541962092341162602522202993782792835301377, \
'pair': [1, 'a'], 'raw': b'\\x00', 'x': 0.1})
>>> fields({"v": 1, "n": 3}, "demo", 1, n=int)["n"]
3
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from typing import Any

import msgpack
import river

from pipeline.errors import CheckpointError

__all__ = ["STATE_FORMAT", "StateError", "decode", "encode", "fields", "format_of",
           "river_blob", "river_estimator"]

STATE_FORMAT = 2
"""The version of this encoding; 1 was ``pickle.dumps`` of the whole scorer."""
MAGIC = b"CWSTATE%d\n" % STATE_FORMAT
_EXT_BIGINT = 1
_INT64 = range(-(2**63), 2**64)  # what msgpack packs natively (int64 and uint64)
_HEAD = re.compile(rb"CWSTATE(\d+)\n")
RIVER_VERSION: str = vars(river)["__version__"]  # river does not re-export it to mypy


class StateError(CheckpointError):
    """A state tree cannot be encoded or decoded, or a component's state does not fit it."""


def encode(tree: dict[str, Any]) -> bytes:
    """``tree`` (plain data, see the module docstring) as bytes of state format 2."""
    try:
        body: bytes = msgpack.packb(tree, default=_pack_default, use_bin_type=True,
                                    strict_types=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise StateError(f"cannot encode task state: {exc}") from exc
    return MAGIC + body


def decode(data: bytes) -> dict[str, Any]:
    """The tree :func:`encode` made; StateError for another format or bytes that do not
    decode (never a traceback from msgpack)."""
    version = format_of(data)
    if version != STATE_FORMAT:
        raise StateError(f"task state of format {version}, this chainwatch reads format "
                         f"{STATE_FORMAT} only" if version is not None else
                         "task state does not start with a chainwatch state header")
    try:
        tree = msgpack.unpackb(data[len(MAGIC):], ext_hook=_ext_hook, raw=False,
                               use_list=True, strict_map_key=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError, StateError) as exc:
        raise StateError(f"task state does not decode: {exc}") from exc
    if not isinstance(tree, dict):
        raise StateError(f"task state is a {type(tree).__name__}, expected a map")
    return tree


def format_of(data: bytes) -> int | None:
    """The state format of ``data`` from its header; None when there is none (a format 1
    pickle has no header: its bytes start with the pickle protocol opcode)."""
    found = _HEAD.match(data[:32])
    return int(found.group(1)) if found else None


def _pack_default(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        return msgpack.ExtType(_EXT_BIGINT, value.to_bytes(value.bit_length() // 8 + 1,
                                                           "big", signed=True))
    raise TypeError(f"{type(value).__name__} is not plain state data: {value!r:.80}")


def _ext_hook(code: int, payload: bytes) -> Any:
    if code == _EXT_BIGINT and payload:
        return int.from_bytes(payload, "big", signed=True)
    raise StateError(f"unknown msgpack extension type {code}")


def fields(state: Any, what: str, version: int, **types: type | tuple[type, ...]) -> dict[str, Any]:
    """``state`` checked as the dict of ``what`` at layout ``version`` with exactly the keys
    ``types`` names (plus ``"v"``), each of its type; StateError in one line otherwise.

    A ``float`` entry accepts an int too (msgpack keeps 1.0 a float, but be lenient).
    """
    if not isinstance(state, dict):
        raise StateError(f"{what} state is a {type(state).__name__}, expected a map")
    if state.get("v") != version:
        raise StateError(f"{what} state has layout version {state.get('v')!r}, this chainwatch "
                         f"reads {version}")
    expected = set(types) | {"v"}
    if set(state) != expected:
        missing, unknown = sorted(expected - set(state)), sorted(set(state) - expected)
        raise StateError(f"{what} state: missing keys {missing}, unknown keys {unknown}")
    for key, kind in types.items():
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds:
            kinds = (*kinds, int)
        value = state[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise StateError(f"{what} state: {key!r} is a {type(value).__name__}, expected "
                             + " or ".join(k.__name__ for k in kinds))
    return state


def river_blob(estimator: Any) -> dict[str, Any]:
    """A river estimator as ``{"pickle": bytes, "river": RIVER_VERSION}``."""
    return {"pickle": pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL),
            "river": RIVER_VERSION}


def river_estimator(blob: Any, what: str, check: Callable[[Any], bool] | None = None) -> Any:
    """The estimator in ``blob`` (see :func:`river_blob`), written under this river version.

    Call it only on state decoded from authenticated bytes (see the module docstring).
    ``check``, if given, must accept the result (e.g. ``isinstance``), else StateError.
    """
    if not isinstance(blob, dict) or set(blob) != {"pickle", "river"} \
            or not isinstance(blob["pickle"], bytes) or not isinstance(blob["river"], str):
        raise StateError(f"{what} state: expected a river blob {{'pickle', 'river'}}")
    if blob["river"] != RIVER_VERSION:
        raise StateError(f"{what} was saved under river {blob['river']}, this is river "
                         f"{RIVER_VERSION}; it cannot be restored (start it fresh)")
    try:
        estimator = pickle.loads(blob["pickle"])  # authenticated bytes only (module docstring)
    except Exception as exc:  # any unpickling failure of a stale blob is a refusal
        raise StateError(f"{what} state: its river estimator does not load ({exc})") from exc
    if check is not None and not check(estimator):
        raise StateError(f"{what} state: its river blob holds a {type(estimator).__name__}")
    return estimator
