"""Leaves: canonical bytes of alerts and checkpoint records, their ids, strict re-parsing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.alerts import Alert
from pipeline.audit import Leaf, LeafError, checkpoint_id, leaf_hash
from pipeline.audit.leaves import MAX_LEAF_BYTES
from pipeline.checkpoints import CheckpointRef
from pipeline.errors import RecordError

SHA = "ab" * 32


def an_alert(**changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "type": "pump_and_dump", "severity": "high", "score": 0.93, "subject": "0x" + "aa" * 20,
        "detector": "pump_phase", "model_version": "1",
        "evidence": {"return_10": 0.41, "buyers": 37},
        "source": {"topic": "chain.dex", "partition": 0, "offset": 7,
                   "item_ids": ["log_0x01_3"]},
        "event_time": 100, "detected_at": 112, "addresses": ("0x" + "bb" * 20,)}
    return Alert.build(**(fields | changes))


def a_ref(**changes: Any) -> CheckpointRef:
    fields: dict[str, Any] = {
        "uri": f"file:///data/ckpt/scorers/p0007/000000000003-{SHA}.ckpt", "group": "scorers",
        "task": "p0007", "seq": 3, "sha256": SHA, "size": 1234,
        "created_at": 1_700_000_000_000,
        "meta": {"partition": 7, "offsets": {"chain.dex": 41, "chain.transactions": 2**40},
                 "events": 99, "state_format": 2}}
    return CheckpointRef(**(fields | changes))


def test_an_alert_leaf_is_its_to_json_bytes_under_its_id() -> None:
    alert = an_alert()
    leaf = Leaf.from_alert(alert)
    assert (leaf.kind, leaf.id) == ("alert", alert.alert_id)
    assert leaf.data == b"alert\n" + alert.to_json()
    assert leaf.payload == alert.to_json()
    assert leaf.hash == leaf_hash(leaf.data)
    assert Leaf.from_alert_json(alert.to_json()) == leaf
    assert Leaf.decode(leaf.data) == leaf


def test_a_checkpoint_leaf_is_its_sorted_record() -> None:
    ref = a_ref()
    leaf = Leaf.from_checkpoint(ref)
    assert (leaf.kind, leaf.id) == ("checkpoint", checkpoint_id(SHA)) == ("checkpoint",
                                                                         f"checkpoint:{SHA}")
    record = orjson.loads(leaf.payload)
    assert record == ref.to_record()
    assert list(record) == sorted(record) and list(record["meta"]) == sorted(record["meta"])
    assert record["meta"]["offsets"]["chain.transactions"] == 2**40  # exact integers
    # what the scorer publishes on the checkpoints topic parses to the same leaf
    published = orjson.dumps(ref.to_record(), option=orjson.OPT_SORT_KEYS)
    assert Leaf.from_checkpoint_json(published) == leaf
    assert Leaf.from_checkpoint_json(ref.to_record()) == leaf
    spaced = orjson.dumps(ref.to_record(), option=orjson.OPT_INDENT_2)  # not canonical
    assert Leaf.from_checkpoint_json(spaced) == leaf
    assert Leaf.decode(leaf.data) == leaf


def test_field_order_and_spacing_do_not_change_an_alert_leaf() -> None:
    alert = an_alert()
    reordered = orjson.dumps(dict(reversed(orjson.loads(alert.to_json()).items())),
                             option=orjson.OPT_INDENT_2)
    assert Leaf.from_alert_json(reordered) == Leaf.from_alert(alert)
    with pytest.raises(LeafError, match="canonical"):
        Leaf.decode(b"alert\n" + reordered)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                               max_size=3),
    max_leaves=6)


@settings(max_examples=200, deadline=None)
@given(score=st.floats(allow_nan=False, allow_infinity=False),
       evidence=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
       item_ids=st.lists(st.text(min_size=1, max_size=12), max_size=4),
       labels=st.dictionaries(st.text(max_size=6), json_values, max_size=2),
       event_time=st.integers(0, 2**63 - 1))
def test_parsing_gives_exactly_the_to_json_bytes(score: float, evidence: dict[str, Any],
                                                 item_ids: list[str], labels: dict[str, Any],
                                                 event_time: int) -> None:
    alert = an_alert(score=score, evidence=evidence, labels=labels, event_time=event_time,
                     source={"topic": "chain.dex", "partition": 1, "offset": 2,
                             "item_ids": item_ids})
    leaf = Leaf.from_alert_json(alert.to_json())
    assert leaf == Leaf.from_alert(alert) == Leaf.from_alert(Alert.from_json(alert.to_json()))
    assert Leaf.decode(leaf.data) == leaf


@pytest.mark.parametrize(("raw", "code"), [
    (b"{not json", "not_json"),
    (b"[1, 2]", "bad_type"),
    (b'{"alert_id": "x"}', "missing_field"),
    (orjson.dumps(orjson.loads(an_alert().to_json()) | {"extra": 1}), "bad_value"),
    (orjson.dumps(orjson.loads(an_alert().to_json()) | {"alert_id": 7}), "bad_value"),
    (orjson.dumps(orjson.loads(an_alert().to_json()) | {"alert_id": "has space"}),
     "bad_value"),
    (orjson.dumps(orjson.loads(an_alert().to_json()) | {"alert_id": f"checkpoint:{SHA}"}),
     "bad_value"),
    (orjson.dumps(orjson.loads(an_alert().to_json()) | {"addresses": "0xab"}), "bad_type"),
    (orjson.dumps(orjson.loads(an_alert().to_json()) | {"evidence": []}), "bad_type"),
    (b" " * (MAX_LEAF_BYTES + 1), "oversized"),
    (12, "bad_type"),
])
def test_bad_alerts_raise_a_record_error_for_the_dead_letter_topic(raw: Any,
                                                                   code: str) -> None:
    with pytest.raises(LeafError) as caught:
        Leaf.from_alert_json(raw)
    assert caught.value.code == code
    assert isinstance(caught.value, RecordError)


def test_bad_checkpoint_records_raise_leaf_errors() -> None:
    record = a_ref().to_record()
    for bad in (record | {"seq": "3"}, record | {"sha256": "xyz"}, {"uri": "x"},
                record | {"extra": 1}, record | {"meta": {"k": float("nan")}}):
        with pytest.raises(LeafError, match="checkpoint"):
            Leaf.from_checkpoint_json(bad)
    with pytest.raises(LeafError) as caught:
        Leaf.from_checkpoint_json(b"\xff")
    assert caught.value.code == "not_json"


@pytest.mark.parametrize("data", [
    b"", b"alert", b"alert{}", b"rumour\n{}", b"alert\n{}", b"checkpoint\n[]",
    b"checkpoint\n" + orjson.dumps(a_ref().to_record()),  # keys not sorted
    b"alert\n" + an_alert().to_json() + b" ",
    b"Alert\n" + an_alert().to_json(),
    "alert\n{}",  # text, not bytes
])
def test_decode_refuses_anything_but_canonical_leaf_bytes(data: Any) -> None:
    with pytest.raises(LeafError):
        Leaf.decode(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=100).map(str.encode))
def test_decode_of_random_bytes_raises_only_leaf_error(data: bytes) -> None:
    try:
        leaf = Leaf.decode(data)
    except LeafError:
        return
    assert leaf.data == data  # the rare random canonical leaf


def test_leaf_repr_is_short() -> None:
    assert repr(Leaf.from_checkpoint(a_ref())).startswith(f"Leaf('checkpoint', "
                                                          f"'checkpoint:{SHA}', ")
