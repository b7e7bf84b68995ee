"""The pool risk model on a toy outcome: both estimators learn it, name the feature that
decides it as the top contribution, and survive a state round trip."""

from __future__ import annotations

import random

import pytest

from pipeline import state
from pipeline.detectors.risk import PoolRisk


def _taught(estimator: str) -> PoolRisk:
    """Drained (y) exactly when ``a`` > 5; ``b`` is noise."""
    risk = PoolRisk(features=("a", "b"), estimator=estimator, min_labels=40, min_each=10)
    rng = random.Random(7)
    for _ in range(600):
        a, b = rng.uniform(0, 10), rng.uniform(0, 10)
        risk.learn_one({"a": a, "b": b}, a > 5)
    return risk


@pytest.mark.parametrize("estimator", ["logistic", "forest"])
def test_the_model_learns_and_names_the_feature_that_decides(estimator: str) -> None:
    risk = _taught(estimator)
    # b is the more unusual value here, but a decides: a is the top contribution
    risky, safe = {"a": 7.5, "b": 9.9, "liquidity_weth": 3.0}, {"a": 1.0, "b": 8.0,
                                                                  "liquidity_weth": 3.0}
    assert risk.warm and risk.score_one(risky) > 0.7 and risk.score_one(safe) < 0.3
    top = risk.contributions(risky)
    assert list(top) == ["a", "b"] and top["a"] > 0  # a pushes the risk up, most of all
    assert risk.contributions(safe)["a"] < 0  # and down for the safe pool
    assert risk.score_one({"a": 9.0}) == 0.0  # nothing priced in WETH: nothing to lose


@pytest.mark.parametrize("estimator", ["logistic", "forest"])
def test_a_restored_model_scores_as_the_original(estimator: str) -> None:
    risk = _taught(estimator)
    copy = PoolRisk(features=("a", "b"), estimator=estimator, min_labels=40, min_each=10)
    copy.load_state(state.decode(state.encode(risk.state())))
    x = {"a": 6.5, "b": 4.0, "liquidity_weth": 2.0}
    assert copy.score_one(x) == risk.score_one(x) and copy.labels == risk.labels


def test_an_unknown_estimator_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="logistic, forest"):
        PoolRisk(estimator="boosting")
