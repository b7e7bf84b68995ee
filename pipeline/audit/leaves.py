"""Leaves of the audit log: the canonical bytes of one alert or one checkpoint record.

Encoding
    ``<kind> LF <canonical JSON>``: the kind (``alert`` or ``checkpoint``), one newline byte,
    then compact JSON with sorted keys and exact integers, as orjson writes it with
    ``OPT_SORT_KEYS`` (it never writes a raw newline, so the first one ends the kind). An
    alert's JSON is exactly :meth:`~pipeline.alerts.Alert.to_json`; a checkpoint's is
    :meth:`~pipeline.checkpoints.CheckpointRef.to_record`, which is what the scorer
    publishes. The same record always gives the same bytes, so a replay after a crash gives
    the same leaf hash and the same id. A new format would be a new kind.

Ids
    An alert's id is its ``alert_id``; a checkpoint's is ``checkpoint:<sha256>`` (see
    :func:`checkpoint_id`), the digest a scorer looks up before it trusts a checkpoint, and
    no other id starts with ``checkpoint:``. The log appends each id once.

Parsing
    Records from Kafka go through :meth:`Leaf.from_alert_json` /
    :meth:`Leaf.from_checkpoint_json`, which validate and re-encode them canonically; a bad
    record raises :class:`~pipeline.audit.errors.LeafError`, a RecordError with a ``code``
    for the dead-letter topic. :meth:`Leaf.decode` reads stored leaf bytes back and refuses
    any that are not exactly canonical, which is how verification re-checks every leaf.

>>> leaf = Leaf.from_checkpoint_json(b'{"uri": "file:///c/g/p0000/000000000001-' + b"ab" * 32
...     + b'.ckpt", "group": "g", "task": "p0000", "seq": 1, "sha256": "' + b"ab" * 32
...     + b'", "size": 5, "created_at": 1700000000000, "meta": {"partition": 0}}')
>>> leaf.kind, leaf.id == checkpoint_id("ab" * 32), leaf.data[:25]
('checkpoint', True, b'checkpoint\\n{"created_at":')
>>> Leaf.decode(leaf.data) == leaf
True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import orjson

from pipeline.alerts import Alert
from pipeline.audit.errors import LeafError
from pipeline.audit.merkle import leaf_hash
from pipeline.checkpoints import CheckpointRef
from pipeline.errors import CheckpointError

KINDS = ("alert", "checkpoint")
CHECKPOINT_PREFIX = "checkpoint:"  # only checkpoint ids start with it
MAX_LEAF_BYTES = 1 << 20
_ID = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces: hex ids and prefixes
_ALERT_FIELDS = frozenset(f.name for f in fields(Alert))


def checkpoint_id(sha256: str) -> str:
    """The leaf id of the checkpoint whose digest is ``sha256``."""
    return f"{CHECKPOINT_PREFIX}{sha256}"


@dataclass(frozen=True, slots=True)
class Leaf:
    """One entry of the log: ``kind``, ``id`` (unique in the log) and the canonical ``data``.

    Build it with one of the ``from_*`` class methods or :meth:`decode`, never by hand.
    """

    kind: str
    id: str
    data: bytes

    @property
    def hash(self) -> bytes:
        """The RFC 9162 leaf hash of ``data``."""
        return leaf_hash(self.data)

    @property
    def payload(self) -> bytes:
        """The canonical JSON after the kind line."""
        return self.data.partition(b"\n")[2]

    def __repr__(self) -> str:
        return f"Leaf({self.kind!r}, {self.id!r}, {len(self.data)} bytes)"

    # -- alerts --------------------------------------------------------------------------

    @classmethod
    def from_alert(cls, alert: Alert) -> Leaf:
        """The leaf of an alert: its ``to_json()`` bytes, id ``alert_id``."""
        return cls._make("alert", alert.alert_id, _encode(alert.to_json, "alert"))

    @classmethod
    def from_alert_json(cls, raw: bytes | str) -> Leaf:
        """The leaf of an alert as it arrives from the alerts topic (validated, canonical).

        Same bytes as ``from_alert(Alert.from_json(raw))``, without building the dataclass
        dict again: ``to_json`` is orjson with sorted keys over the fields, and so is this.
        """
        obj = _object(raw, "alert")
        obj.setdefault("labels", {})
        if missing := _ALERT_FIELDS - set(obj):
            raise LeafError("missing_field", f"alert lacks the fields {sorted(missing)}",
                            field=sorted(missing)[0])
        if unknown := set(obj) - _ALERT_FIELDS:
            raise LeafError("bad_value", f"alert has unknown fields {sorted(unknown)}",
                            field=sorted(unknown)[0])
        for name, kind in (("addresses", list), ("evidence", dict), ("source", dict),
                           ("labels", dict)):
            if not isinstance(obj[name], kind):
                raise LeafError("bad_type", f"alert field {name!r} must be a JSON "
                                f"{'array' if kind is list else 'object'}", field=name,
                                value=obj[name])
        return cls._make("alert", obj["alert_id"],
                         _encode(lambda: orjson.dumps(obj, option=orjson.OPT_SORT_KEYS),
                                 "alert"))

    # -- checkpoints ---------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, ref: CheckpointRef) -> Leaf:
        """The leaf of a checkpoint: its ``to_record()`` dict, id ``checkpoint:<sha256>``."""
        return cls._make("checkpoint", checkpoint_id(ref.sha256),
                         _encode(lambda: orjson.dumps(ref.to_record(),
                                                      option=orjson.OPT_SORT_KEYS), "checkpoint"))

    @classmethod
    def from_checkpoint_json(cls, raw: bytes | str | Mapping[str, Any]) -> Leaf:
        """The leaf of a checkpoint record from the checkpoints topic (or its dict)."""
        record = raw if isinstance(raw, Mapping) else _object(raw, "checkpoint record")
        try:
            ref = CheckpointRef.from_record(record)
        except CheckpointError as exc:
            raise LeafError("bad_value", str(exc)) from exc
        return cls.from_checkpoint(ref)

    # -- stored bytes --------------------------------------------------------------------

    @classmethod
    def decode(cls, data: bytes) -> Leaf:
        """The leaf whose canonical bytes are ``data``; LeafError if they are anything else."""
        if type(data) is not bytes:
            raise LeafError("bad_type", f"leaf data must be bytes, got {type(data).__name__}")
        kind, newline, payload = data.partition(b"\n")
        if not newline or kind.decode("ascii", "replace") not in KINDS:
            raise LeafError("unknown_schema", f"leaf kind {kind[:20]!r} is not one of {KINDS}",
                            field="kind", value=kind[:20])
        if kind == b"alert":
            leaf = cls.from_alert_json(payload)
        else:
            leaf = cls.from_checkpoint_json(payload)
        if leaf.data != data:
            raise LeafError("bad_value", f"leaf {leaf.id!r} is not in canonical form (its "
                            "bytes differ from the re-encoding of what they say)",
                            field="data")
        return leaf

    @classmethod
    def _make(cls, kind: str, leaf_id: object, payload: bytes) -> Leaf:
        if not isinstance(leaf_id, str) or not _ID.fullmatch(leaf_id) \
                or (kind != "checkpoint") == leaf_id.startswith(CHECKPOINT_PREFIX):
            raise LeafError("bad_value", f"{kind} id {leaf_id!r}: expected 1-200 printable "
                            "ASCII characters without spaces, starting with "
                            f"{CHECKPOINT_PREFIX!r} for a checkpoint only", field="id",
                            value=leaf_id)
        data = kind.encode() + b"\n" + payload
        if len(data) > MAX_LEAF_BYTES:
            raise LeafError("oversized", f"{kind} {leaf_id} is {len(data)} bytes; a leaf "
                            f"holds at most {MAX_LEAF_BYTES}", field="data", value=len(data))
        return cls(kind, leaf_id, data)


def _object(raw: bytes | str, what: str) -> dict[str, Any]:
    if not isinstance(raw, bytes | str):
        raise LeafError("bad_type", f"{what}: expected JSON bytes, got {type(raw).__name__}")
    if len(raw) > MAX_LEAF_BYTES:
        raise LeafError("oversized", f"{what} is {len(raw)} bytes; a leaf holds at most "
                        f"{MAX_LEAF_BYTES}", value=len(raw))
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise LeafError("not_json", f"{what} is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise LeafError("bad_type", f"{what} must be a JSON object, got "
                        f"{type(obj).__name__}")
    return obj


def _encode(dump: Callable[[], bytes], what: str) -> bytes:
    try:
        data = dump()
    except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
        raise LeafError("bad_value", f"{what} cannot be encoded as canonical JSON: {exc}") \
            from exc
    return data
