"""The supervised model's prequential tests are taken in stream time: the same transactions
and the same release-ordered labels give the same (score, label) pairs however the two topics
interleave — also when every transaction is read before the first label, as in a replay that
was produced before it is scored (``chainwatch evaluate blte`` read ~35k transactions first
and tested half of them on an untrained model: ROC-AUC 0.5)."""

from __future__ import annotations

import copy
import heapq
import random
from dataclasses import dataclass

import pytest

from pipeline import state
from pipeline.detectors import DelayedLabelModel
from pipeline.detectors.supervised import SETTLED
from pipeline.records import Label, Transaction
from pipeline.scoring import Scorer

DELAY = 7


@dataclass(frozen=True)
class Item:
    item_id: str
    block: int
    x: dict[str, float]
    y: int


def _items(n: int = 600, seed: int = 3) -> list[Item]:
    """Blocks with gaps and several items per block; the label follows ``log_value``."""
    rng = random.Random(seed)
    items, block = [], 100
    for i in range(n):
        block += rng.choice((0, 0, 1, 1, 2, 5))
        value = rng.random()
        y = int(value + rng.gauss(0.0, 0.15) > 0.7)
        items.append(Item(f"t{i}", block, {"log_value": value, "log_gas": rng.random()}, y))
    return items


class StreamTime:
    """What TransactionScoring does with the model: a label read before stream time reaches
    its release waits, one read after it is applied at once."""

    def __init__(self, model: DelayedLabelModel, with_release: bool = True) -> None:
        self.model = model
        self.with_release = with_release
        self.stream_block = 0
        self.waiting: list[tuple[int, int, str, int]] = []
        self.seq = 0

    def transaction(self, item: Item) -> None:
        if item.block > self.stream_block:
            self.stream_block = item.block
            while self.waiting and self.waiting[0][0] <= item.block:
                released, _, subject, y = heapq.heappop(self.waiting)
                self._apply(subject, y, released)
        self.model.remember(item.item_id, item.block, item.x)

    def label(self, item: Item) -> None:
        released = item.block + DELAY
        if released <= self.stream_block:
            self._apply(item.item_id, item.y, released)
        else:
            self.seq += 1
            heapq.heappush(self.waiting, (released, self.seq, item.item_id, item.y))

    def _apply(self, subject: str, y: int, released: int) -> None:
        if self.with_release:
            self.model.learn_label(subject, y, released)
        else:
            self.model.learn_label(subject, y)


def _label_topic(items: list[Item]) -> list[Item]:
    """The labels topic: in release order (ties in the order of their transactions)."""
    return sorted(items, key=lambda item: item.block + DELAY)


def _merge(items: list[Item], order: str, seed: int = 0) -> list[tuple[str, Item]]:
    labels = _label_topic(items)
    if order == "txs_first":
        return [("tx", i) for i in items] + [("label", i) for i in labels]
    if order == "labels_first":
        return [("label", i) for i in labels] + [("tx", i) for i in items]
    if order == "live":  # each label read exactly when it is released
        out, j = [], 0
        for item in items:
            while j < len(labels) and labels[j].block + DELAY <= item.block:
                out.append(("label", labels[j]))
                j += 1
            out.append(("tx", item))
        return out + [("label", i) for i in labels[j:]]
    rng = random.Random(seed)  # random: each topic in its own order, in random-sized runs
    queues = [[("tx", i) for i in items], [("label", i) for i in labels]]
    out = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        for _ in range(rng.randint(1, 80)):
            if queue:
                out.append(queue.pop(0))
    return out


def _pairs(items: list[Item], order: str, seed: int = 0,
           with_release: bool = True) -> list[tuple[float, int]]:
    model = DelayedLabelModel(learning_rate=0.1)
    model.test_log = []
    stream = StreamTime(model, with_release)
    for kind, item in _merge(items, order, seed):
        if kind == "tx":
            stream.transaction(item)
        else:
            stream.label(item)
    return model.test_log


def test_pairs_do_not_depend_on_how_the_topics_interleave() -> None:
    items = _items()
    live = _pairs(items, "live")
    assert len(live) > 500
    assert len({score for score, _ in live}) > 100, "the model learns and its scores vary"
    for order, seed in (("txs_first", 0), ("labels_first", 0), ("random", 1), ("random", 2)):
        assert _pairs(items, order, seed) == live, order


def test_a_label_read_late_still_counts_for_later_transactions() -> None:
    """Without the release block the test scores are those given at remember time, so
    reading every transaction first tests all of them on an untrained model."""
    items = _items()
    stale = _pairs(items, "txs_first", with_release=False)
    assert {score for score, _ in stale} == {0.5}
    assert _pairs(items, "txs_first") != stale


def test_read_live_the_test_scores_are_those_given_at_remember_time() -> None:
    items = _items()
    assert _pairs(items, "live") == _pairs(items, "live", with_release=False)


def test_each_test_uses_exactly_the_labels_released_before_its_block() -> None:
    """The reference: a fresh model taught the labels released by an item's block, in
    release order, scores it as the tested pair says."""
    items = _items(200)
    tested = _pairs(items, "txs_first")  # in release order; the last few are never released
    assert len(tested) > 180
    pairs = {i.item_id: pair for i, pair in zip(_label_topic(items), tested, strict=False)}
    for item in items[:180:17]:
        reference = DelayedLabelModel(learning_rate=0.1)
        for labelled in _label_topic(items):
            if labelled.block + DELAY <= item.block:
                reference.learn_one(labelled.x, labelled.y)
        assert pairs[item.item_id] == (reference.score_one(item.x), item.y)


def test_restored_mid_stream_from_its_state_it_gives_the_same_pairs() -> None:
    items = _items(300)
    merged = _merge(items, "random", seed=4)
    model = DelayedLabelModel(learning_rate=0.1)
    model.test_log = []
    stream = StreamTime(model)
    for k, (kind, item) in enumerate(merged):
        if k == len(merged) // 2:
            assert model.unsettled and model.pending  # mid-stream: there is something to keep
            model = DelayedLabelModel(learning_rate=0.1)  # built from configuration
            model.load_state(state.decode(state.encode({"m": stream.model.state()}))["m"])
            mine, theirs = model.state(), stream.model.state()
            del mine["model"], theirs["model"]  # pickle bytes may differ for equal models
            assert mine == theirs
            stream = copy.deepcopy(stream)  # the harness's own queue of waiting labels
            stream.model = model
        if kind == "tx":
            stream.transaction(item)
        else:
            stream.label(item)
    assert model.test_log == _pairs(items, "random", seed=4)


def test_its_state_is_explicit_and_of_one_layout_version() -> None:
    model = DelayedLabelModel()
    model.remember("a", 1, {"log_value": 1.0})
    saved = model.state()
    assert saved["v"] == 1 and saved["pending"][0][:2] == ["a", 1]
    assert saved["unsettled"] == ["a"] and saved["counts"] == [0, 0, 0]
    assert not hasattr(DelayedLabelModel, "__setstate__")  # pickles are no longer loaded
    with pytest.raises(state.StateError, match="layout version 2, this chainwatch reads 1"):
        DelayedLabelModel().load_state(saved | {"v": 2})
    with pytest.raises(state.StateError, match="not 19 float64s"):
        DelayedLabelModel().load_state(saved | {"pending": [["a", 1, b"x", 0.5, SETTLED]]})


def test_items_awaiting_settlement_stay_bounded() -> None:
    model = DelayedLabelModel(max_pending=50)
    for i in range(1000):  # no label ever comes
        model.remember(f"t{i}", i, {"log_value": float(i % 2)})
        if i % 10 == 0:
            model.learn_one({"log_value": float(i % 2)}, i % 2)
    assert len(model.pending) == 50 and len(model.unsettled) <= 50
    assert len(model.unsettled) == len(model.unsettled_blocks)


def test_a_transaction_read_twice_does_not_hold_back_the_others() -> None:
    model = DelayedLabelModel()
    model.remember("dup", 1, {"log_value": 1.0})
    model.remember("b", 2, {"log_value": 1.0})
    model.remember("dup", 9, {"log_value": 1.0})  # re-sent later: its later place counts
    model.learn_one({"log_value": 1.0}, 1)
    model.settle(5)
    assert model.pending["b"][3] == SETTLED and model.pending["dup"][3] != SETTLED


def _tx(i: int, block: int, value_eth: float) -> Transaction:
    return Transaction(hash="0x" + f"{i:064x}", nonce=0, block_number=block,
                       block_timestamp=block * 12, transaction_index=0,
                       from_address="0x" + f"{i:040x}", to_address="0x" + f"{i + 1:040x}",
                       value=int(value_eth * 10**18), gas=21000, gas_price=30 * 10**9)


def test_scorer_pairs_do_not_depend_on_how_the_topics_interleave() -> None:
    rng = random.Random(8)
    txs, labels = [], []
    for i in range(400):
        value = rng.random() * 20
        tx = _tx(i, 1000 + i // 2, value)
        txs.append(tx)
        labels.append(Label(subject=tx.item_id, label=int(value > 14), source="test",
                            block_number=tx.block_number,
                            released_block=tx.block_number + DELAY))
    labels.sort(key=lambda label: label.released_block)

    def pairs(records: list[Transaction | Label]) -> list[tuple[float, int]]:
        scorer = Scorer()
        scorer.transactions.supervised.test_log = []
        for offset, record in enumerate(records):
            scorer.process(record, {"topic": "t", "partition": 0, "offset": offset})
        return scorer.transactions.supervised.test_log

    live: list[Transaction | Label] = []
    j = 0
    for tx in txs:
        while j < len(labels) and labels[j].released_block <= tx.block_number:
            live.append(labels[j])
            j += 1
        live.append(tx)
    live += labels[j:]
    expected = pairs(live)
    assert len({score for score, _ in expected}) > 10
    assert pairs([*txs, *labels]) == expected
