"""The wire format: compact UTF-8 JSON, one record per Kafka message.

A record on the wire is its fields plus three envelope keys, in the style of ethereum-etl's
stream output::

    {"type": "transaction", "schema_version": 1, "item_id": "transaction_0x…", "hash": …}

uint256 amounts travel as decimal strings so that no JSON reader turns them into floats.
:func:`decode` is the one door into the pipeline: it never raises anything but
:class:`~pipeline.errors.RecordError`, whose ``code`` becomes the dead-letter reason.

>>> from pipeline.records import DexEvent
>>> ev = DexEvent.from_dict({"pool_address": "0x" + "aa" * 20, "token0": "0x" + "bb" * 20,
...     "token1": "0x" + "cc" * 20, "kind": "sync", "block_number": 7, "block_timestamp": 0,
...     "transaction_hash": "0x" + "dd" * 32, "log_index": 3, "reserve0": 2**200})
>>> decode(encode(ev)) == ev
True
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import orjson

from pipeline.errors import RecordError
from pipeline.records import MAX_RECORD_BYTES, RECORD_TYPES, ChainRecord

__all__ = ["MAX_RECORD_BYTES", "SCHEMA_VERSION", "SUPPORTED_SCHEMA_VERSIONS", "decode",
           "encode", "from_wire_dict", "to_wire_dict"]

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})


def to_wire_dict(record: ChainRecord) -> dict[str, Any]:
    """The JSON-ready mapping of a record: envelope first, then fields in declared order."""
    out: dict[str, Any] = {
        "type": record.record_type,
        "schema_version": SCHEMA_VERSION,
        "item_id": record.item_id,
    }
    amounts = record.amount_fields
    for name in record._parsers:  # declared field order
        value = getattr(record, name)
        out[name] = str(value) if name in amounts and value is not None else value
    return out


def encode(record: ChainRecord) -> bytes:
    return orjson.dumps(to_wire_dict(record))


def decode(data: bytes, expected: Collection[str] | None = None) -> ChainRecord:
    """Parse and validate one message; ``expected`` lists the record types a topic carries."""
    if len(data) > MAX_RECORD_BYTES:
        raise RecordError("oversized", f"record is {len(data)} bytes, over the "
                          f"{MAX_RECORD_BYTES}-byte limit")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RecordError("not_json", f"not valid UTF-8 JSON: {exc}") from None
    try:
        return from_wire_dict(obj, expected)
    except RecordError as exc:
        if not isinstance(exc.value, float):
            raise
        # orjson reads integers past 64 bits as floats; the standard library keeps them exact
        return from_wire_dict(json.loads(data), expected)


def from_wire_dict(obj: Any, expected: Collection[str] | None = None) -> ChainRecord:
    if not isinstance(obj, dict):
        raise RecordError("bad_type", f"expected a JSON object, got {type(obj).__name__}")
    version = obj.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version not in SUPPORTED_SCHEMA_VERSIONS:
        raise RecordError("unknown_schema", f"schema_version {_shown(version)} is not supported "
                          f"(supported: {sorted(SUPPORTED_SCHEMA_VERSIONS)})",
                          field="schema_version", value=version)
    kind = obj.get("type")
    if kind is None and expected is not None and len(expected) == 1:
        kind = next(iter(expected))  # a topic of one record type may omit it
    if expected is not None and kind not in expected:
        raise RecordError("bad_value", f"field 'type': expected one of {sorted(expected)} on "
                          f"this topic (got {_shown(kind)})", field="type", value=kind)
    cls = RECORD_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise RecordError("bad_value", f"field 'type': unknown record type {_shown(kind)}; "
                          f"expected one of {sorted(RECORD_TYPES)}", field="type", value=kind)
    return cls.from_dict(obj)


def _shown(value: object) -> str:
    """``repr(value)``, cut to 80 characters: an error message never quotes a huge value."""
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."
