"""A supervised online model that learns from delayed labels; it scores but never alerts.

Labels (:class:`~pipeline.records.Label`) arrive on their own topic, long after the
transaction they label and in any interleaving with it, so anything learned from them could
differ between two runs of the same transaction stream. The model therefore raises no alert
(alerts must be a function of one topic-partition's order); it exposes ``score_one`` for
evaluation, and its test score of each item whose label is pending.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from river import compose, linear_model, optim, preprocessing

from pipeline.detectors.base import Configurable

SUPERVISED_FEATURES = (
    "log_value", "log_gas", "log_gas_price", "gas_premium", "gas_used_ratio", "is_call",
    "is_creation", "sender_age", "sender_idle", "sender_new", "first_send", "recipient_new",
    "sender_txs_10", "fan_out_10", "fan_in_10", "new_recipients_10", "value_out_10",
    "novel_value", "novel_fan_out",
)


class DelayedLabelModel(Configurable):
    """Logistic regression on standardised transaction features, trained prequentially.

    For every transaction the scorer calls :meth:`remember` with its item id and features:
    the model scores it right then (the score an analyst would have seen when it happened)
    and both wait in a bounded pending map (``max_pending`` items, at most
    ``max_delay_blocks`` old; older ones are dropped and counted in :attr:`expired`). A label
    whose ``subject`` is a pending item id trains the model on that item's features
    (:meth:`learn_label`), and its event-time score and the label become :attr:`last_test`:
    test-then-train, the test done before any label that came later.
    :meth:`prequential_score` is that event-time score of a pending item.

    >>> m = DelayedLabelModel(max_pending=10)
    >>> for i in range(40):
    ...     score = m.remember(f"t{i}", i, {"log_value": float(i % 2)})
    ...     _ = m.learn_label(f"t{i}", i % 2)
    >>> m.score_one({"log_value": 1.0}) > 0.5 > m.score_one({"log_value": 0.0})
    True
    >>> round(m.remember("late", 100, {"log_value": 1.0}), 2), m.prequential_score("late") > 0.5
    (0.68, True)
    >>> m.learn_label("late", 1), round(m.last_test[0], 2), m.last_test[1]
    (True, 0.68, 1)
    """

    name = "delayed_label_model"
    version = "2"

    def __init__(self, features: tuple[str, ...] = SUPERVISED_FEATURES,
                 learning_rate: float = 0.05, max_pending: int = 100_000,
                 max_delay_blocks: int = 10_000, seed: int = 42) -> None:
        self.features = tuple(features)
        self.learning_rate = learning_rate
        self.max_pending = max_pending
        self.max_delay_blocks = max_delay_blocks
        self.seed = seed  # the model is deterministic; kept for the common configuration
        self.model: Any = compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate)),
        )
        # item id -> (block, feature values in ``features`` order, score at event time)
        self.pending: OrderedDict[str, tuple[int, tuple[float, ...], float]] = OrderedDict()
        self.learned = 0
        self.unmatched = 0
        self.expired = 0
        self.last_test: tuple[float, int] | None = None
        self.test_log: list[tuple[float, int]] | None = None  # evaluation: every test pair

    def _vector(self, x: dict[str, float]) -> dict[str, float]:
        get = x.get
        return {f: get(f, 0.0) for f in self.features}

    def score_one(self, x: dict[str, float]) -> float:
        """Probability that ``x`` is fraud (0.5 before any label)."""
        return float(self.model.predict_proba_one(self._vector(x)).get(True, 0.0))

    def learn_one(self, x: dict[str, float], y: bool | int) -> None:
        self.model.learn_one(self._vector(x), bool(y))
        self.learned += 1

    def remember(self, item_id: str, block: int, x: dict[str, float]) -> float:
        """Score ``x`` now and keep it until a label for ``item_id`` comes, or it is too
        old; returns the score."""
        vector = self._vector(x)
        score = float(self.model.predict_proba_one(vector).get(True, 0.0))
        pending = self.pending
        pending[item_id] = (block, tuple(vector.values()), score)
        pending.move_to_end(item_id)
        horizon = block - self.max_delay_blocks
        while len(pending) > self.max_pending or next(iter(pending.values()))[0] < horizon:
            pending.popitem(last=False)
            self.expired += 1
        return score

    def learn_label(self, subject: str, label: int) -> bool:
        """Train on the pending item ``subject``; False if it is unknown or expired. Its
        (event-time score, label) pair is left in :attr:`last_test`."""
        entry = self.pending.pop(subject, None)
        if entry is None:
            self.unmatched += 1
            return False
        self.last_test = (entry[2], label)
        if self.test_log is not None:
            self.test_log.append(self.last_test)
        self.learn_one(dict(zip(self.features, entry[1], strict=True)), label)
        return True

    def prequential_score(self, item_id: str) -> float | None:
        """The event-time score of the pending item ``item_id`` (None when not pending)."""
        entry = self.pending.get(item_id)
        return entry[2] if entry is not None else None
