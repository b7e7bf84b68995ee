"""Records and the wire codec: round trips, exact amounts, garbage raises only RecordError."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import codec
from pipeline.errors import RecordError
from pipeline.records import (
    MAX_BLOCK_NUMBER,
    MAX_INPUT_CHARS,
    RECORD_TYPES,
    TEXT_LIMITS,
    UINT256_MAX,
    ChainRecord,
    DexEvent,
    Label,
    TokenTransfer,
    Transaction,
)

hex_bytes = lambda n: st.binary(min_size=n, max_size=n).map(lambda b: "0x" + b.hex())  # noqa: E731
addresses = hex_bytes(20)
hashes = hex_bytes(32)
uint256 = st.integers(min_value=0, max_value=UINT256_MAX)
uint64 = st.integers(min_value=0, max_value=2**64 - 1)
blocks = st.integers(min_value=0, max_value=MAX_BLOCK_NUMBER)
optional = lambda s: st.none() | s  # noqa: E731

transactions = st.builds(
    Transaction, hash=hashes, nonce=uint64, block_number=blocks, block_timestamp=uint64,
    transaction_index=uint64, from_address=addresses, to_address=optional(addresses),
    value=uint256, gas=uint64, gas_price=uint256,
    input=st.binary(max_size=64).map(lambda b: "0x" + b.hex()),
    receipt_gas_used=optional(uint64), receipt_status=optional(st.sampled_from([0, 1])),
    max_fee_per_gas=optional(uint256), max_priority_fee_per_gas=optional(uint256),
    transaction_type=optional(st.integers(0, 3)),
)
dex_events = st.builds(
    DexEvent, pool_address=addresses, token0=addresses, token1=addresses,
    kind=st.sampled_from(["swap", "mint", "burn", "sync"]), block_number=blocks,
    block_timestamp=uint64, transaction_hash=hashes, log_index=uint64, amount0_in=uint256,
    amount1_in=uint256, amount0_out=uint256, amount1_out=uint256, reserve0=uint256,
    reserve1=uint256, sender=optional(addresses), to=optional(addresses), liquidity=uint256,
    transaction_index=optional(uint64),
)
token_transfers = st.builds(
    TokenTransfer, token_address=addresses, from_address=addresses, to_address=addresses,
    value=uint256, transaction_hash=hashes, log_index=uint64, block_number=blocks,
    block_timestamp=optional(uint64),
)
labels = st.builds(
    Label, subject=st.text(min_size=1, max_size=40).filter(lambda t: t == t.strip() and t),
    label=st.sampled_from([0, 1]), source=st.sampled_from(["blte", "synth"]),
    block_number=blocks, released_block=blocks,
)
records = transactions | dex_events | token_transfers | labels


@given(records)
def test_encode_decode_round_trips(record: ChainRecord) -> None:
    assert codec.decode(codec.encode(record)) == record


@given(records)
def test_amounts_are_decimal_strings_on_the_wire(record: ChainRecord) -> None:
    wire = orjson.loads(codec.encode(record))
    for name in record.amount_fields:
        value = getattr(record, name)
        assert wire[name] == (None if value is None else str(value))
    assert wire["item_id"] == record.item_id


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_arbitrary_bytes_raise_only_record_error(data: bytes) -> None:
    try:
        codec.decode(data)
    except RecordError as exc:
        assert exc.code


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10,
)


@given(records, st.sampled_from(["value", "gas", "hash", "from_address", "reserve0", "kind",
                                 "block_number", "log_index", "to", "schema_version", "type"]),
       json_values)
@settings(max_examples=300)
def test_any_field_mutation_decodes_or_raises_record_error(
        record: ChainRecord, name: str, value: object) -> None:
    wire = codec.to_wire_dict(record)
    wire[name] = value
    try:
        decoded = codec.decode(json.dumps(wire).encode())
    except RecordError as exc:
        assert exc.code in {"bad_type", "bad_value", "negative_amount", "missing_field",
                            "unknown_schema", "too_long"}
    else:
        assert decoded.item_id


def tx_dict(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "hash": "0x" + "ab" * 32, "nonce": 1, "block_number": 100,
        "block_timestamp": "2021-09-01 00:00:00 UTC", "transaction_index": 0,
        "from_address": "0x" + "AA" * 20, "to_address": "0x" + "bb" * 20,
        "value": "12345678901234567890123", "gas": "21000", "gas_price": 10**9,
        "input": "0x",
    }
    return base | changes


def test_from_dict_accepts_export_forms() -> None:
    tx = Transaction.from_dict(tx_dict())
    assert tx.block_timestamp == 1630454400
    assert tx.from_address == "0x" + "aa" * 20  # lower-cased
    assert tx.value == 12345678901234567890123
    assert tx.item_id == "transaction_0x" + "ab" * 32
    assert tx.key == tx.from_address


@pytest.mark.parametrize(("changes", "code", "field"), [
    ({"value": "-5"}, "negative_amount", "value"),
    ({"value": 1.5}, "bad_type", "value"),
    ({"value": True}, "bad_type", "value"),
    ({"value": str(2**256)}, "bad_value", "value"),
    ({"from_address": "0x1234"}, "bad_value", "from_address"),
    ({"hash": None}, "missing_field", "hash"),
    ({"block_timestamp": "yesterday"}, "bad_type", "block_timestamp"),
    ({"input": "0xabc"}, "bad_value", "input"),
])
def test_invalid_fields_are_named(changes: dict[str, object], code: str, field: str) -> None:
    with pytest.raises(RecordError) as info:
        Transaction.from_dict(tx_dict(**changes))
    assert info.value.code == code
    assert info.value.field == field
    assert repr(field) in str(info.value)


def test_decode_rejects_unknown_schema_oversize_and_wrong_topic() -> None:
    wire = codec.to_wire_dict(Transaction.from_dict(tx_dict()))
    with pytest.raises(RecordError, match="schema_version") as info:
        codec.decode(orjson.dumps(wire | {"schema_version": 99}))
    assert info.value.code == "unknown_schema"
    with pytest.raises(RecordError) as info:
        codec.decode(b" " * (codec.MAX_RECORD_BYTES + 1))
    assert info.value.code == "oversized"
    with pytest.raises(RecordError, match=r"expected one of \['dex_event'\]"):
        codec.decode(orjson.dumps(wire), expected={"dex_event"})
    with pytest.raises(RecordError) as info:
        codec.decode(b"\xff\xfe not json")
    assert info.value.code == "not_json"


def test_records_are_frozen() -> None:
    tx = Transaction.from_dict(tx_dict())
    with pytest.raises(AttributeError):
        tx.value = 0  # type: ignore[misc]


def test_big_integers_as_json_numbers_stay_exact() -> None:
    wire = codec.to_wire_dict(Transaction.from_dict(tx_dict()))
    wire["value"] = 123456789012345678901234567890  # ethereum-etl JSON writes numbers
    assert codec.decode(json.dumps(wire).encode()).value == 123456789012345678901234567890


def test_parsers_follow_the_declared_field_order() -> None:
    """to_dict and the wire format walk ``_parsers``: it must list every field in order."""
    import dataclasses

    for cls in RECORD_TYPES.values():
        assert [f.name for f in dataclasses.fields(cls)] == list(cls._parsers)


def _wire(record: ChainRecord, **changes: object) -> bytes:
    return json.dumps(codec.to_wire_dict(record) | changes).encode()


@given(records, st.sampled_from([MAX_BLOCK_NUMBER + 1, 2**63, 2**64 - 1, str(2**64 - 1)]))
def test_implausible_block_numbers_are_rejected_with_a_reason(record: ChainRecord,
                                                              block: object) -> None:
    """A block at 2**64 - 1 looks valid but would poison per-key state: it is bad input."""
    for name in ("block_number", "released_block"):
        if name not in record._parsers:
            continue
        with pytest.raises(RecordError) as info:
            codec.decode(_wire(record, **{name: block}))
        assert (info.value.code, info.value.field) == ("bad_value", name)
        assert "plausible block number" in str(info.value)


def test_the_largest_plausible_block_number_is_accepted() -> None:
    tx = Transaction.from_dict(tx_dict(block_number=MAX_BLOCK_NUMBER))
    assert tx.block_number == MAX_BLOCK_NUMBER == 10**12


def _label(**changes: object) -> dict[str, object]:
    return {"subject": "transaction_0x" + "ab" * 32, "label": 1, "source": "blte",
            "block_number": 5, "released_block": 9} | changes


@pytest.mark.parametrize("name", sorted(set(TEXT_LIMITS) & set(Label._parsers)))
def test_label_text_fields_are_bounded(name: str) -> None:
    limit = TEXT_LIMITS[name]
    assert getattr(Label.from_dict(_label(**{name: "x" * limit})), name) == "x" * limit
    with pytest.raises(RecordError) as info:
        Label.from_dict(_label(**{name: "x" * (limit + 1)}))
    assert (info.value.code, info.value.field) == ("too_long", name)
    assert f"{limit}-character limit" in str(info.value)
    with pytest.raises(RecordError) as info:  # a megabyte subject, as seen on the topic
        codec.decode(orjson.dumps(_label(**{name: "s" * 900_000}) | {"type": "label"}))
    assert info.value.code == "too_long"
    assert len(str(info.value)) < 300


def test_calldata_is_bounded_by_the_record_size() -> None:
    calldata = "0x" + "ab" * ((MAX_INPUT_CHARS - 2) // 2)
    assert Transaction.from_dict(tx_dict(input=calldata)).input == calldata
    with pytest.raises(RecordError) as info:
        Transaction.from_dict(tx_dict(input=calldata + "ab"))
    assert (info.value.code, info.value.field) == ("too_long", "input")


@pytest.mark.parametrize(("name", "value"), [
    ("from_address", "0x" + "aa" * 400_000), ("hash", " " * 500_000 + "0x" + "ab" * 32),
    ("type", "t" * 500_000), ("schema_version", "v" * 500_000)])
def test_huge_strings_in_exact_format_fields_are_rejected_with_a_short_message(
        name: str, value: str) -> None:
    wire = codec.to_wire_dict(Transaction.from_dict(tx_dict())) | {name: value}
    with pytest.raises(RecordError) as info:
        codec.decode(orjson.dumps(wire))
    assert info.value.code in {"bad_value", "unknown_schema"}
    assert len(str(info.value)) < 300
