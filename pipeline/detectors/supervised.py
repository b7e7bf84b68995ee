"""A supervised online model that learns from delayed labels; it scores but never alerts.

Labels (:class:`~pipeline.records.Label`) arrive on their own topic, long after the
transaction they label and in any interleaving with it, so anything learned from them could
differ between two runs of the same transaction stream. The model therefore raises no alert
(alerts must be a function of one topic-partition's order); it exposes ``score_one`` for
evaluation, and its test score of each item whose label is pending.

That test score is taken in *stream time*: it is the score given with every label released
before the item's block applied and none released later, whatever the order in which the
labels and transactions topics were read. A service that reads the transactions topic far
ahead of the labels topic (a replay produced before it is scored, a lagging label feed) would
otherwise test items on a model that has not yet learned labels released long before them —
an untrained model (0.5) for everything read before the first label.

Its state (:meth:`DelayedLabelModel.state`) is explicit: the pending map in order, each
item's feature values as little-endian float64 bytes, the unsettled queue and the counters;
only the river model travels as a river blob (:mod:`pipeline.state`).
"""

from __future__ import annotations

import sys
from array import array
from collections import OrderedDict, deque
from typing import Any

from river import compose, linear_model, optim, preprocessing

from pipeline.detectors.base import Configurable
from pipeline.state import StateError, fields, river_blob, river_estimator

SUPERVISED_FEATURES = (
    "log_value", "log_gas", "log_gas_price", "gas_premium", "gas_used_ratio", "is_call",
    "is_creation", "sender_age", "sender_idle", "sender_new", "first_send", "recipient_new",
    "sender_txs_10", "fan_out_10", "fan_in_10", "new_recipients_10", "value_out_10",
    "novel_value", "novel_fan_out",
)
SETTLED = -1
"""In place of the model version a pending item was scored with: its test score is final."""


class DelayedLabelModel(Configurable):
    """Logistic regression on standardised transaction features, trained prequentially.

    For every transaction the scorer calls :meth:`remember` with its item id and features:
    the model scores it right then (the score an analyst would have seen when it happened)
    and both wait in a bounded pending map (``max_pending`` items, at most
    ``max_delay_blocks`` old; older ones are dropped and counted in :attr:`expired`). A label
    whose ``subject`` is a pending item id trains the model on that item's features
    (:meth:`learn_label`), and the item's test score and the label become :attr:`last_test`:
    test-then-train, the test done before any label that came later.
    :meth:`prequential_score` is the test score of a pending item as known so far.

    The test score is settled in stream time when labels come with their ``released_block``
    (applied in release order, as the labels topic holds them): before a label released at
    block ``r`` trains the model, every pending item of a block before ``r`` is settled — its
    score at :meth:`remember` is kept if no label was learned since, else it is scored again
    by the model as it is then, which holds exactly the labels released by its block. So a
    label read late (after the transactions that came after its release) still counts for
    them, and the test pairs do not depend on how the two topics interleave. Without
    ``released_block`` a label settles every pending item first, so the test score is the one
    given at :meth:`remember`.

    >>> m = DelayedLabelModel(max_pending=10)
    >>> for i in range(40):
    ...     score = m.remember(f"t{i}", i, {"log_value": float(i % 2)})
    ...     _ = m.learn_label(f"t{i}", i % 2, released_block=i + 1)
    >>> m.score_one({"log_value": 1.0}) > 0.5 > m.score_one({"log_value": 0.0})
    True
    >>> round(m.remember("late", 100, {"log_value": 1.0}), 2), m.prequential_score("late") > 0.5
    (0.68, True)
    >>> m.learn_label("late", 1, released_block=105), round(m.last_test[0], 2), m.last_test[1]
    (True, 0.68, 1)

    Read late, a label released at block 3 still counts for the item of block 4, and not for
    the item of block 2 (scored at :meth:`remember` before anything was learned):

    >>> m = DelayedLabelModel()
    >>> for block in (1, 2, 4):
    ...     _ = m.remember(f"t{block}", block, {"log_value": 1.0})
    >>> m.learn_label("t1", 1, released_block=3), m.prequential_score("t2")
    (True, 0.5)
    >>> m.prequential_score("t4") > 0.5
    True
    """

    name = "delayed_label_model"
    version = "3"

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
        # item id -> (block, feature values in ``features`` order, test score, ``learned``
        # when it was scored or SETTLED); the values as a packed array: a fifth of the memory
        # of a tuple of floats
        self.pending: OrderedDict[str, tuple[int, array[float], float, int]] = OrderedDict()
        # items whose test score may still change, in the order remembered: ids and blocks
        # (two deques of references, not one of tuples: 16 bytes an item)
        self.unsettled: deque[str] = deque()
        self.unsettled_blocks: deque[int] = deque()
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

    def _predict(self, values: array[float]) -> float:
        vector = dict(zip(self.features, values, strict=True))
        return float(self.model.predict_proba_one(vector).get(True, 0.0))

    def remember(self, item_id: str, block: int, x: dict[str, float]) -> float:
        """Score ``x`` now and keep it until a label for ``item_id`` comes, or it is too
        old; returns the score."""
        vector = self._vector(x)
        score = float(self.model.predict_proba_one(vector).get(True, 0.0))
        pending = self.pending
        pending[item_id] = (block, array("d", vector.values()), score, self.learned)
        pending.move_to_end(item_id)
        self.unsettled.append(item_id)
        self.unsettled_blocks.append(block)
        horizon = block - self.max_delay_blocks
        while len(pending) > self.max_pending or next(iter(pending.values()))[0] < horizon:
            pending.popitem(last=False)
            self.expired += 1
        while self.unsettled and self._first_unsettled() is None:
            self._drop_first()
        while len(self.unsettled) > self.max_pending:  # bounded, even if nothing settles it
            self._settle_first()
        return score

    def _first_unsettled(self) -> tuple[int, array[float], float, int] | None:
        """The pending entry of the oldest item in :attr:`unsettled`; None if that item has
        since been learned, expired or settled, or was remembered again (a duplicate: its
        later place counts)."""
        entry = self.pending.get(self.unsettled[0])
        if entry is None or entry[3] == SETTLED or entry[0] != self.unsettled_blocks[0]:
            return None
        return entry

    def _drop_first(self) -> None:
        self.unsettled.popleft()
        self.unsettled_blocks.popleft()

    def _settle_first(self) -> None:
        """Fix the test score of the oldest unsettled item (rescored if the model changed)."""
        entry = self._first_unsettled()
        item_id = self.unsettled[0]
        self._drop_first()
        if entry is None:
            return
        block, values, score, version = entry
        if version != self.learned:
            score = self._predict(values)
        self.pending[item_id] = (block, values, score, SETTLED)

    def settle(self, released_block: int | None = None) -> None:
        """Stream time has reached ``released_block`` (a label released there is about to be
        learned): fix the test score of every pending item of an earlier block; of every
        pending item when None."""
        blocks = self.unsettled_blocks
        while blocks and (released_block is None or blocks[0] < released_block
                          or self._first_unsettled() is None):
            self._settle_first()

    def learn_label(self, subject: str, label: int, released_block: int | None = None) -> bool:
        """Train on the pending item ``subject``; False if it is unknown or expired. Its
        (test score, label) pair is left in :attr:`last_test`. ``released_block`` is when
        the label became known in stream time (see the class docstring); without it, the
        label counts as released after every item remembered so far."""
        self.settle(released_block)
        entry = self.pending.pop(subject, None)
        if entry is None:
            self.unmatched += 1
            return False
        _, values, score, version = entry
        if version not in (SETTLED, self.learned):
            # released no later than its own block: tested on what was learned before it
            score = self._predict(values)
        self.last_test = (score, label)
        if self.test_log is not None:
            self.test_log.append(self.last_test)
        self.learn_one(dict(zip(self.features, values, strict=True)), label)
        return True

    def prequential_score(self, item_id: str) -> float | None:
        """The test score of the pending item ``item_id`` as known so far (final once a label
        released after its block has been learned); None when not pending."""
        entry = self.pending.get(item_id)
        if entry is None:
            return None
        if entry[3] in (SETTLED, self.learned):
            return entry[2]
        return self._predict(entry[1])  # unsettled: every label learned so far is due for it

    def state(self) -> dict[str, Any]:
        """Pending items ``[id, block, values, score, learned or SETTLED]`` in order, the
        unsettled ids and blocks, the counters, the last test pair and the test log."""
        return {"v": 1, "model": river_blob(self.model),
                "pending": [[item_id, block, _pack(values), score, version]
                            for item_id, (block, values, score, version) in self.pending.items()],
                "unsettled": list(self.unsettled),
                "unsettled_blocks": list(self.unsettled_blocks),
                "counts": [self.learned, self.unmatched, self.expired],
                "last_test": None if self.last_test is None else list(self.last_test),
                "test_log": None if self.test_log is None else [list(t) for t in self.test_log]}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "delayed label model", 1, model=dict, pending=list, unsettled=list,
               unsettled_blocks=list, counts=list, last_test=(list, type(None)),
               test_log=(list, type(None)))
        model = river_estimator(state["model"], "delayed label model",
                                lambda e: isinstance(e, compose.Pipeline))
        width = len(self.features)
        try:
            pending = OrderedDict(
                (str(item_id), (int(block), _unpack(values, width), float(score), int(version)))
                for item_id, block, values, score, version in state["pending"])
            unsettled = deque(str(i) for i in state["unsettled"])
            blocks = deque(int(b) for b in state["unsettled_blocks"])
            self.learned, self.unmatched, self.expired = (int(n) for n in state["counts"])
            last = state["last_test"]
            self.last_test = None if last is None else (float(last[0]), int(last[1]))
            log = state["test_log"]
            self.test_log = None if log is None else [(float(s), int(y)) for s, y in log]
        except (TypeError, ValueError) as exc:
            raise StateError(f"delayed label model state does not fit: {exc}") from exc
        if len(unsettled) != len(blocks):
            raise StateError("delayed label model state: unsettled ids and blocks differ in "
                             "length")
        self.model, self.pending = model, pending
        self.unsettled, self.unsettled_blocks = unsettled, blocks


def _pack(values: array[float]) -> bytes:
    """Feature values as little-endian float64 bytes (exact, and half a list's size)."""
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array("d", values)
    swapped.byteswap()
    return swapped.tobytes()


def _unpack(data: Any, width: int) -> array[float]:
    if not isinstance(data, bytes) or len(data) != 8 * width:
        raise ValueError(f"pending feature values are not {width} float64s")
    values = array("d", data)
    if sys.byteorder != "little":
        values.byteswap()
    return values
