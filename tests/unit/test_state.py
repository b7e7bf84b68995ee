"""Task state as plain data (pipeline.state): the encoding is exact and versioned, and every
stateful component saved mid-stream, encoded, decoded and loaded into a fresh instance goes on
exactly like the one that was never interrupted."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import state as state_mod
from pipeline.errors import CheckpointError
from pipeline.features import AddressFeatures, KeyedStore, PoolFeatures, Seen
from pipeline.records import DexEvent, TokenTransfer, Transaction
from pipeline.state import (
    STATE_FORMAT,
    StateError,
    decode,
    encode,
    fields,
    format_of,
    river_blob,
    river_estimator,
)
from producers.synth import SynthConfig, SyntheticChain


def _round_trip(state: dict[str, Any]) -> dict[str, Any]:
    return decode(encode(state))


# -- the encoding -------------------------------------------------------------------------------

PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.binary(max_size=8) | st.integers(min_value=-(2**300), max_value=2**300),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=4),
    max_leaves=20)


@given(st.dictionaries(st.text(max_size=4), PLAIN, max_size=5))
@settings(max_examples=200, deadline=None)
def test_plain_data_round_trips_exactly(tree: dict[str, Any]) -> None:
    assert _round_trip(tree) == tree
    assert _round_trip({"t": tree}) == {"t": tree}


@pytest.mark.parametrize("n", [0, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1,
                               2**255 * 3, -(2**1000) + 7, 255, -256, 10**40])
def test_ints_of_any_size_come_back_exact_and_as_int(n: int) -> None:
    back = _round_trip({"n": n, "l": [n, -n]})
    assert back == {"n": n, "l": [n, -n]} and type(back["n"]) is int


def test_floats_bools_and_tuples() -> None:
    back = _round_trip({"f": [0.1, math.inf, -0.0, 1e-308], "b": [True, 0], "t": (1, "a")})
    assert back["f"] == [0.1, math.inf, -0.0, 1e-308] and math.copysign(1, back["f"][2]) < 0
    assert [type(b) for b in back["b"]] == [bool, int]
    assert back["t"] == [1, "a"]  # tuples come back as lists: loaders convert
    assert math.isnan(_round_trip({"x": math.nan})["x"])


def test_the_header_names_the_format() -> None:
    data = encode({"v": 1})
    assert data.startswith(b"CWSTATE2\n") and format_of(data) == STATE_FORMAT == 2
    assert format_of(b"CWSTATE7\n\x80") == 7
    assert format_of(b"\x80\x05\x95 a pickle") is None


@pytest.mark.parametrize(("data", "says"), [
    (b"\x80\x05\x95\x00", "does not start with a chainwatch state header"),
    (b"CWSTATE1\n\x80", "format 1"),
    (b"CWSTATE2\n\xc1", "does not decode"),
    (b"CWSTATE2\n\x81\xa1v\x01\x00", "does not decode"),  # trailing bytes
    (b"CWSTATE2\n\x91\x01", "expected a map"),
    (b"CWSTATE2\n\x81\xa1x\xd4\x09\x00", "does not decode"),  # unknown extension type
    (b"CWSTATE2\n\x81\x01\x02", "does not decode"),  # an int key
])
def test_bad_bytes_are_one_state_error(data: bytes, says: str) -> None:
    with pytest.raises(StateError, match=says) as info:
        decode(data)
    assert isinstance(info.value, CheckpointError) and "\n" not in str(info.value)


def test_what_is_not_plain_data_is_refused() -> None:
    with pytest.raises(StateError, match="not plain state data"):
        encode({"x": object()})
    with pytest.raises(StateError, match="not plain state data"):
        encode({"x": {1.5, 2.5}})


def test_fields_names_what_is_missing_unknown_or_mistyped() -> None:
    assert fields({"v": 2, "a": 1, "b": 1}, "demo", 2, a=int, b=float)["b"] == 1
    with pytest.raises(StateError, match=r"demo state: missing keys \['b'\], unknown keys "
                                         r"\['c'\]"):
        fields({"v": 2, "a": 1, "c": 1}, "demo", 2, a=int, b=int)
    with pytest.raises(StateError, match="layout version 1, this chainwatch reads 2"):
        fields({"v": 1, "a": 1}, "demo", 2, a=int)
    with pytest.raises(StateError, match="'a' is a bool, expected int"):
        fields({"v": 2, "a": True}, "demo", 2, a=int)
    with pytest.raises(StateError, match="expected a map"):
        fields([1], "demo", 2)


def test_a_river_blob_of_another_river_version_is_refused_naming_both(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from river import preprocessing
    blob = river_blob(preprocessing.MinMaxScaler())
    assert isinstance(river_estimator(_round_trip({"b": blob})["b"], "scaler"),
                      preprocessing.MinMaxScaler)
    loads: list[bytes] = []
    monkeypatch.setattr(state_mod.pickle, "loads", loads.append)
    old = blob | {"river": "0.1.0"}
    with pytest.raises(StateError, match=rf"scaler was saved under river 0\.1\.0, this is "
                                         rf"river {state_mod.RIVER_VERSION}"):
        river_estimator(old, "scaler")
    with pytest.raises(StateError, match="expected a river blob"):
        river_estimator({"pickle": "x"}, "scaler")
    assert loads == []


# -- components: save mid-stream, restore into a fresh instance, go on identically -------------


@cache
def _records() -> tuple[Any, ...]:
    chain = SyntheticChain(SynthConfig(seed=11, blocks=160, campaigns={
        "pump_and_dump": 10, "rug_pull": 10, "wash_trading": 10, "anomalous_transfer": 10}))
    return tuple(r for block in chain.blocks() for r in (*block.transactions,
                                                          *block.dex_events))


def _feed_features(target: Any, records: tuple[Any, ...]) -> list[Any]:
    out: list[Any] = []
    for r in records:
        if (isinstance(target, PoolFeatures) and isinstance(r, DexEvent)) \
                or (isinstance(target, AddressFeatures) and isinstance(r, Transaction)):
            out.append(target.update(r))
        elif isinstance(target, AddressFeatures) and isinstance(r, TokenTransfer):
            target.update_transfer(r)
    return out


@pytest.mark.parametrize("make", [
    PoolFeatures, lambda: PoolFeatures(max_pools=5, max_wallets=40, idle_blocks=30),
    AddressFeatures, lambda: AddressFeatures(max_addresses=50, idle_blocks=20,
                                                       window=4),
], ids=["pools", "pools-small", "addresses", "addresses-small"])
def test_feature_stores_resume_exactly(make: Callable[[], Any]) -> None:
    records = _records()
    cut = len(records) // 2
    original, fresh = make(), make()
    _feed_features(original, records[:cut])
    fresh.load_state(_round_trip(original.state()))
    assert fresh.state() == original.state()
    assert fresh.evictions == original.evictions
    assert _feed_features(fresh, records[cut:]) == _feed_features(original, records[cut:])
    assert fresh.state() == original.state() and fresh.evictions == original.evictions


def test_small_feature_stores_evicted_and_kept_their_counts() -> None:
    pools = PoolFeatures(max_pools=5, max_wallets=40, idle_blocks=30)
    _feed_features(pools, _records())
    restored = PoolFeatures(max_pools=5, max_wallets=40, idle_blocks=30)
    restored.load_state(_round_trip(pools.state()))
    assert restored.evictions == pools.evictions > 0


def test_keyed_store_keeps_recency_order_and_evictions() -> None:
    store = KeyedStore(Seen, max_keys=3, idle_blocks=100)
    for key, block in (("a", 1), ("b", 2), ("c", 3), ("a", 4), ("d", 5)):
        store.get(key, block)
    restored = KeyedStore(Seen, max_keys=3, idle_blocks=100)
    restored.load_state(_round_trip(store.state()))
    assert list(restored) == list(store) == ["c", "a", "d"] and restored.evictions == 1
    restored.get("e", 6)
    store.get("e", 6)
    assert list(restored) == list(store) == ["a", "d", "e"]


def test_a_component_state_with_a_missing_or_unknown_key_is_refused() -> None:
    pools = PoolFeatures()
    _feed_features(pools, _records()[:200])
    state = pools.state()
    with pytest.raises(StateError, match=r"missing keys \['wallets'\]"):
        PoolFeatures().load_state({k: v for k, v in state.items() if k != "wallets"})
    with pytest.raises(StateError, match=r"unknown keys \['extra'\]"):
        PoolFeatures().load_state(state | {"extra": 1})


@cache
def _feature_streams() -> tuple[tuple[dict[str, float], ...], tuple[Any, ...],
                                tuple[dict[str, float], ...]]:
    """(DEX features, (transaction, features) pairs, tx features) from the synthetic chain."""
    pools, addresses = PoolFeatures(), AddressFeatures()
    dex: list[dict[str, float]] = []
    txs: list[tuple[Transaction, dict[str, float]]] = []
    for r in _records():
        if isinstance(r, DexEvent):
            dex.append(pools.update(r))
        elif isinstance(r, Transaction):
            txs.append((r, addresses.update(r)))
    return tuple(dex), tuple(txs), tuple(x for _, x in txs)


def _restored(component: Any, fresh: Any) -> Any:
    fresh.load_state(_round_trip({"c": component.state()})["c"])
    return fresh


def _twice(make: Callable[[], Any], feed: Callable[[Any, Any], Any], data: tuple[Any, ...],
           ) -> tuple[list[Any], list[Any]]:
    """Feed the first half to one instance, restore a fresh one from its state, feed both
    the second half: what each gave, from the cut on."""
    cut = len(data) // 2
    original = make()
    for item in data[:cut]:
        feed(original, item)
    copy = _restored(original, make())
    return ([feed(original, item) for item in data[cut:]],
            [feed(copy, item) for item in data[cut:]])


def test_cooldown_and_threshold_filter_resume_exactly() -> None:
    from pipeline.detectors import Cooldown, ThresholdFilter
    dex, _, _ = _feature_streams()
    subjects = [(f"pool{i % 7}", i // 3) for i in range(len(dex))]
    scored = tuple((s, b, x.get("liquidity_drop_3", 0.0)) for (s, b), x in zip(subjects, dex,
                                                                              strict=True))
    mine, theirs = _twice(lambda: ThresholdFilter(0.2, 30),
                          lambda f, e: f.decide(e[0], e[2], e[1]), scored)
    assert mine == theirs and any(mine) and not all(mine)
    mine, theirs = _twice(lambda: Cooldown(25), lambda c, e: c.allow(e[0], e[1]), scored)
    assert mine == theirs and any(mine) and not all(mine)


def test_quantile_filter_resumes_exactly_by_refeeding_its_window() -> None:
    from pipeline.detectors import QuantileFilter
    _, _, txs = _feature_streams()
    scores = tuple((f"s{i % 11}", i // 4, x["novel_value"]) for i, x in enumerate(txs))

    def feed(f: QuantileFilter, e: tuple[str, int, float]) -> tuple[bool, bool, float]:
        flagged = f.flags(e[2])
        return flagged, flagged and f.decide(e[0], e[1]), f.threshold

    mine, theirs = _twice(lambda: QuantileFilter(0.95, 200, 100, 20), feed, scores)
    assert mine == theirs and any(m[0] for m in mine)
    half = QuantileFilter(0.9, 50, 10, 5)
    half.flags(1.0)
    assert _restored(half, QuantileFilter(0.9, 50, 10, 5)).state() == half.state()


def test_transfer_anomaly_resumes_exactly() -> None:
    from pipeline.detectors import TransferAnomaly

    def feed(d: TransferAnomaly, x: dict[str, float]) -> float:
        score = d.score_one(x)
        d.learn_one(x)
        return score

    _, _, txs = _feature_streams()
    mine, theirs = _twice(lambda: TransferAnomaly(window_size=100, seed=3), feed, txs)
    assert mine == theirs and len(set(mine)) > 10


def test_delayed_label_model_resumes_exactly() -> None:
    from pipeline.detectors import DelayedLabelModel
    _, pairs, _ = _feature_streams()
    events: list[tuple[str, Any]] = []
    for i, (tx, x) in enumerate(pairs):
        events.append(("tx", (tx.item_id, tx.block_number, x)))
        if i >= 5:  # the label of the transaction five before, released now
            old_tx, old_x = pairs[i - 5]
            events.append(("label", (old_tx.item_id, int(old_x["novel_value"] > 0.3),
                                     tx.block_number)))

    def feed(m: DelayedLabelModel, e: tuple[str, Any]) -> Any:
        kind, args = e
        out = m.remember(*args) if kind == "tx" else (m.learn_label(*args), m.last_test)
        return out, m.expired, m.unmatched, len(m.pending), len(m.unsettled)

    def make() -> DelayedLabelModel:
        m = DelayedLabelModel(max_pending=300, max_delay_blocks=40)
        m.test_log = []
        return m

    mine, theirs = _twice(make, feed, tuple(events))
    assert mine == theirs and len({m[0] for m in mine if isinstance(m[0], float)}) > 10


def test_score_drift_resumes_exactly() -> None:
    from pipeline.detectors import ScoreDrift
    rng = random.Random(5)
    scores = tuple({"score": rng.betavariate(2, 5) + (0.4 if i > 900 else 0.0)}
                   for i in range(1600))

    def feed(d: ScoreDrift, x: dict[str, float]) -> tuple[float, bool, int]:
        d.learn_one(x)
        return d.score_one(x), d.drift_detected, d.drifts

    mine, theirs = _twice(ScoreDrift, feed, scores)
    assert mine == theirs and mine[-1][2] >= 1


def test_rule_detectors_keep_no_state_and_resume_trivially() -> None:
    from pipeline.detectors import LiquidityDrain, PumpPhase, WashTrading
    dex, _, _ = _feature_streams()
    for kind in (LiquidityDrain, PumpPhase, WashTrading):
        assert kind().state() == {}
        mine, theirs = _twice(kind, lambda d, x: (d.learn_one(x), d.score_one(x)), dex)
        assert mine == theirs
        with pytest.raises(StateError, match="keeps no state"):
            kind().load_state({"v": 1})


def test_a_detector_blob_of_another_river_version_is_refused() -> None:
    from pipeline.detectors import TransferAnomaly
    saved = TransferAnomaly().state()
    saved["trees"]["river"] = "0.19.0"
    with pytest.raises(StateError, match=r"saved under river 0\.19\.0"):
        TransferAnomaly().load_state(saved)
