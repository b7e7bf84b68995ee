"""One contract, every detector: the same checks run against each estimator of the family.

The cases are found, not listed: every rule registered in the entry-point group
``chainwatch.detectors`` (the built-ins and any installed plug-in), built with its rule's
parameters, plus every other estimator class ``pipeline.detectors`` exports (the supervised
model and the drift monitor, which no rule alerts with); a detector class there that is in
neither fails :func:`test_every_detector_class_is_covered`.

* ``name`` and ``version`` are strings; constructor arguments come back verbatim from
  ``params()`` and :func:`~pipeline.detectors.clone` rebuilds an unfitted equal;
* saving state (``state()`` -> bytes -> ``load_state``) and pickling both round-trip before
  and after learning to identical scores, and the restored copy goes on learning exactly like
  the original;
* features that come and go (missing keys, unknown keys) never crash and give finite scores;
* ``score_one`` learns nothing.
"""

from __future__ import annotations

import functools
import inspect
import math
import pickle
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest

from pipeline import detectors, state
from pipeline.detectors import (
    DelayedLabelModel,
    LiquidityDrain,
    PumpPhase,
    ScoreDrift,
    WashTrading,
    clone,
)
from pipeline.features import AddressFeatures, PoolFeatures
from pipeline.features.trades import TradeFeatures, trade_from_swap
from pipeline.rules import RuleSet
from producers.synth import SynthConfig, SyntheticChain

Features = dict[str, float]


@cache
def _streams() -> dict[str, tuple[Features, ...]]:
    """Real feature dicts from a small synthetic chain with every campaign type."""
    chain = SyntheticChain(SynthConfig(seed=7, blocks=150, campaigns={
        "pump_and_dump": 10, "rug_pull": 10, "wash_trading": 10, "anomalous_transfer": 10}))
    pools, addresses, markets = PoolFeatures(), AddressFeatures(), TradeFeatures()
    dex: list[Features] = []
    txs: list[Features] = []
    trades: list[Features] = []
    for block in chain.blocks():
        txs += [addresses.update(tx) for tx in block.transactions]
        for ev in block.dex_events:
            st, x = pools.update_state(ev)
            dex.append(x)
            trade = trade_from_swap(ev, st.weth_is_0) if ev.kind == "swap" else None
            if trade is not None:
                trades.append(markets.update(trade))
    rng = random.Random(3)
    scores = tuple({"score": rng.betavariate(2, 5) + (0.4 if i > 600 else 0.0)}
                   for i in range(1200))
    return {"dex": tuple(dex), "tx": tuple(txs), "trades": tuple(trades), "score": scores}


def _learn(detector: Any, x: Features, i: int) -> None:
    detector.learn_one(x)


def _learn_labelled(detector: Any, x: Features, i: int) -> None:
    detector.learn_one(x, x.get("log_value", 0.0) > 0.5 or i % 17 == 0)


@dataclass(frozen=True)
class Case:
    factory: Callable[[], Any]
    stream: str
    teach: Callable[[Any, Features, int], None] = _learn

    def __repr__(self) -> str:
        return type(self.factory()).__name__


def _learn_outcome(detector: Any, x: Features, i: int) -> None:
    detector.learn_one(x, x.get("return_20", 0.0) > 0.05 or i % 3 == 0)


def _learn_pump(detector: Any, x: Features, i: int) -> None:
    detector.learn_one(x, x.get("rise_5m", 0.0) > 0.1 or i % 5 == 0)


STREAMS = {"transactions": "tx", "dex": "dex", "trades": "trades"}
TEACH = {"outcomes": _learn_outcome, "labels": _learn_pump}
NOT_RULES: dict[type, tuple[str, Callable[[Any, Features, int], None]]] = {
    DelayedLabelModel: ("tx", _learn_labelled),  # learns from labels, never alerts
    ScoreDrift: ("score", _learn),  # watches the other detectors' scores
    PumpPhase: ("dex", _learn),  # the pool-feature pump detector, for a user's dex rule
}


def _discover() -> list[Case]:
    rules = RuleSet.load()
    cases = [Case(functools.partial(rules.detector, spec.name, 3), STREAMS[spec.kind],
                  TEACH.get(spec.learn, _learn))
             for spec in rules.specs]
    cases += [Case(functools.partial(cls, seed=5) if "seed" in inspect.signature(cls).parameters
                   else cls, stream, teach) for cls, (stream, teach) in NOT_RULES.items()]
    return cases


CASES = _discover()


def test_every_detector_class_is_covered() -> None:
    exported = {obj for name in detectors.__all__
                if inspect.isclass(obj := getattr(detectors, name))
                and obj is not detectors.Detector  # the protocol itself
                and callable(getattr(obj, "score_one", None))
                and callable(getattr(obj, "learn_one", None))}
    covered = {type(case.factory()) for case in CASES}
    assert exported <= covered, f"detectors without a case: {exported - covered}"
    assert {"anomalous_transfer", "pump_and_dump", "rug_pull", "wash_trading"} <= {
        spec.name for spec in RuleSet.load().specs}


def _fit(case: Case, detector: Any, xs: tuple[Features, ...]) -> None:
    for i, x in enumerate(xs):
        case.teach(detector, x, i)


def _scores(detector: Any, xs: tuple[Features, ...]) -> list[float]:
    return [detector.score_one(x) for x in xs]


@pytest.fixture(params=CASES, ids=repr)
def case(request: pytest.FixtureRequest) -> Case:
    param: Case = request.param
    return param


def _data(case: Case) -> tuple[tuple[Features, ...], tuple[Features, ...]]:
    """(training stream, probes): probes are a spread sample of the whole stream."""
    stream = _streams()[case.stream]
    half = len(stream) * 2 // 3
    return stream[:half], stream[half::max(1, (len(stream) - half) // 200)]


def test_identity_and_configuration(case: Case) -> None:
    detector = case.factory()
    assert isinstance(detector.name, str) and detector.name
    assert isinstance(detector.version, str) and detector.version
    params = detector.params()
    assert params, "constructor arguments are the configuration"
    for name, value in params.items():
        assert getattr(detector, name) == value
    copy = clone(detector)
    assert type(copy) is type(detector) and copy.params() == params
    assert repr(copy) == repr(detector)


def test_clone_is_unfitted(case: Case) -> None:
    train, probes = _data(case)
    fitted = case.factory()
    _fit(case, fitted, train)
    fresh = clone(fitted)
    assert fresh.params() == fitted.params()
    assert _scores(fresh, probes) == _scores(case.factory(), probes)


def _saved(detector: Any) -> Any:
    """A copy through the checkpoint path: state() -> bytes -> load_state() into a fresh
    detector of the same configuration."""
    copy = clone(detector)
    copy.load_state(state.decode(state.encode({"d": detector.state()}))["d"])
    return copy


@pytest.mark.parametrize("copy", [_saved, lambda d: pickle.loads(pickle.dumps(d))],
                         ids=["state", "pickle"])
def test_round_trip_before_and_after_learning(case: Case,
                                              copy: Callable[[Any], Any]) -> None:
    train, probes = _data(case)
    detector = case.factory()
    restored = copy(detector)
    assert _scores(restored, probes) == _scores(detector, probes)
    half = len(train) // 2
    _fit(case, detector, train[:half])
    _fit(case, restored, train[:half])
    assert _scores(restored, probes) == _scores(detector, probes)
    again = copy(detector)
    _fit(case, detector, train[half:])
    _fit(case, again, train[half:])
    assert _scores(again, probes) == _scores(detector, probes)


def test_features_that_come_and_go(case: Case) -> None:
    train, probes = _data(case)
    rng = random.Random(11)
    detector = case.factory()

    def mangle(x: Features) -> Features:
        kept = {k: v for k, v in x.items() if rng.random() < 0.6}
        if rng.random() < 0.3:
            kept[f"unknown_{rng.randrange(5)}"] = rng.random()
        return kept

    _fit(case, detector, tuple(mangle(x) for x in train))
    for x in (*map(mangle, probes), {}, {"unknown": 1.0}):
        assert math.isfinite(detector.score_one(x))


def test_score_one_does_not_learn(case: Case) -> None:
    train, probes = _data(case)
    detector = case.factory()
    _fit(case, detector, train[: len(train) // 2])
    snapshot = pickle.loads(pickle.dumps(detector))
    for x in train:  # scoring everything, many times
        detector.score_one(x)
        detector.score_one(x)
    assert _scores(detector, probes) == _scores(snapshot, probes)
    _fit(case, detector, train[len(train) // 2:])
    _fit(case, snapshot, train[len(train) // 2:])
    assert _scores(detector, probes) == _scores(snapshot, probes)


def test_learning_changes_something_where_it_learns(case: Case) -> None:
    """A guard on the fixtures: learning detectors do learn from this data."""
    train, probes = _data(case)
    detector = case.factory()
    before = _scores(detector, probes)
    _fit(case, detector, train)
    after = _scores(detector, probes)
    learns = not isinstance(detector, PumpPhase | LiquidityDrain | WashTrading)
    assert (before != after) == learns
    assert any(after), "the probes reach non-zero scores"
