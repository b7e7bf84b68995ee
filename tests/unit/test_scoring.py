"""The Scorer: deterministic, resumable from its saved state, independent of topic interleaving,
and it detects the synthetic campaigns on seeds never used for tuning (100-119)."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from functools import cache
from typing import Any

import pytest
from kafka.partitioner.default import murmur2

from pipeline import codec, state
from pipeline.alerts import Alert
from pipeline.errors import RecordError
from pipeline.evaluation import evaluate_synthetic
from pipeline.records import MAX_BLOCK_NUMBER, ChainRecord, DexEvent, Label, Transaction
from pipeline.scoring import DriftWatch, Scorer
from producers.synth import SynthConfig, SyntheticChain

ALL_TYPES = ("pump_and_dump", "rug_pull", "wash_trading", "anomalous_transfer")
Truth = list[dict[str, Any]]


@cache
def _chain(seed: int, blocks: int, rate: float = 8.0) -> tuple[tuple[ChainRecord, ...], Truth]:
    chain = SyntheticChain(SynthConfig(seed=seed, blocks=blocks,
                                       campaigns=dict.fromkeys(ALL_TYPES, rate)))
    records: list[ChainRecord] = []
    for block in chain.blocks():
        records += block.transactions
        records += block.dex_events
    return tuple(records), chain.truth


def _source(offset: int) -> dict[str, Any]:
    return {"topic": "test", "partition": 0, "offset": offset}


def _run(scorer: Scorer, records: tuple[ChainRecord, ...] | list[ChainRecord],
         start: int = 0) -> list[bytes]:
    out: list[bytes] = []
    for offset, record in enumerate(records, start):
        out += [a.to_json() for a in scorer.process(record, _source(offset))]
    return out


def _labels(records: tuple[ChainRecord, ...]) -> list[Label]:
    return [Label(subject=r.item_id, label=int(i % 7 == 0), source="test",
                  block_number=r.block_number, released_block=r.block_number + 5)
            for i, r in enumerate(records) if isinstance(r, Transaction)]


def test_same_records_give_byte_identical_alerts() -> None:
    records, _ = _chain(5, 300)
    first, second = _run(Scorer(), records), _run(Scorer(), records)
    assert first == second
    kinds = {Alert.from_json(a).type for a in first}
    assert {"pump_and_dump", "rug_pull", "wash_trading"} <= kinds


@pytest.mark.parametrize("cut", [1, 2_500, 7_001])
def test_a_scorer_resumes_exactly_from_its_saved_state(cut: int) -> None:
    """state() -> bytes -> load_state() into a Scorer built from configuration: the same
    alerts, metrics and prequential scores as never stopping (labels included)."""
    records, _ = _chain(5, 300)
    stream = _with_labels(records)
    reference = Scorer()
    uninterrupted = _run(reference, stream)
    scorer = Scorer()
    before = _run(scorer, stream[:cut])
    restored = Scorer()
    assert restored.load_state(state.decode(state.encode(scorer.state()))) == []
    assert restored.events == cut
    after = _run(restored, stream[cut:], start=cut)
    assert before + after == uninterrupted
    assert restored.metrics() == reference.metrics()
    pending = [r.item_id for r in records[-50:] if isinstance(r, Transaction)]
    assert [restored.prequential_score(i) for i in pending] == \
        [reference.prequential_score(i) for i in pending]


def _with_labels(records: tuple[ChainRecord, ...]) -> list[ChainRecord]:
    """``records`` with their labels merged in, each a few records after its transaction."""
    labels = {label.subject: label for label in _labels(records)}
    out: list[ChainRecord] = []
    due: list[Label] = []
    for record in records:
        out.append(record)
        if (label := labels.get(record.item_id)) is not None:
            due.append(label)
        if len(due) > 3:
            out.append(due.pop(0))
    return out + due


def test_alerts_do_not_depend_on_topic_interleaving_or_labels() -> None:
    """Per-topic order is all that matters: any merge of the topics gives the same alerts."""
    records, _ = _chain(6, 300)
    txs = [r for r in records if not isinstance(r, DexEvent)]
    dex = [r for r in records if isinstance(r, DexEvent)]
    labels = _labels(records)
    offsets = {id(r): i for i, r in enumerate(records)}

    def merged(seed: int) -> list[bytes]:
        rng = random.Random(seed)
        queues: list[list[ChainRecord]] = [list(txs), list(dex), list(labels)]
        scorer, out = Scorer(), []
        while any(queues):
            queue = rng.choice([q for q in queues if q])
            record = queue.pop(0)
            alerts = scorer.process(record, _source(offsets.get(id(record), -1)))
            out += [a.to_json() for a in alerts]
        return sorted(out)

    assert merged(1) == merged(2) == sorted(_run(Scorer(), records))


def test_labels_train_the_supervised_model_without_alerting() -> None:
    records, _ = _chain(5, 120)
    scorer = Scorer()
    _run(scorer, records)
    labels = _labels(records)
    assert scorer.prequential_score(labels[0].subject) is not None
    assert all(scorer.process(label, _source(0)) == [] for label in labels)
    metrics = scorer.metrics()
    due = [label for label in labels if label.released_block <= records[-1].block_number]
    assert metrics["labels_learned"] == len(due)  # labels apply in stream time
    assert metrics["labels_waiting"] == len(labels) - len(due) > 0
    assert scorer.prequential_score(labels[0].subject) is None  # learned, no longer pending
    for key in ("events", "evictions_pools", "evictions_addresses", "evictions_dex_wallets",
                "pools_tracked", "addresses_tracked", "drifts_rug_pull", "trade_markets_tracked",
                "drifts_anomalous_transfer", "drifts_delayed_label_model", "labels_pending"):
        assert key in metrics
    assert all(isinstance(v, float) for v in metrics.values())


def _partitioned(records: tuple[ChainRecord, ...], partitions: int) -> list[Alert]:
    scorers = [Scorer() for _ in range(partitions)]
    alerts: list[Alert] = []
    for offset, record in enumerate(records):
        key = record.pool_address if isinstance(record, DexEvent) else record.key
        p = (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
        alerts += scorers[p].process(record, _source(offset))
    return alerts


@pytest.mark.parametrize("seed", [100, 101])
def test_detects_held_out_campaigns(seed: int) -> None:
    """Seeds 100+ were never used while tuning. Pump-and-dump: every campaign, alerted in
    its pump before the dump, no false alert; rug pulls: alerted by the drain's next block."""
    records, truth = _chain(seed, 500, rate=6.0)
    for partitions in (1, 4):
        report = evaluate_synthetic(_partitioned(records, partitions), truth, len(records))
        pump, rug = report["pump_and_dump"], report["rug_pull"]
        assert pump["recall"] == 1.0 and pump["precision"] == 1.0
        assert all(h["delay_vs_move"] < 0 <= h["delay_from_onset"] <= 10 for h in pump["hits"])
        assert rug["recall"] == 1.0 and rug["by_move_plus_1_share"] == 1.0
        assert report["wash_trading"]["recall"] >= 0.5


def test_a_sustained_score_shift_raises_one_model_drift_alert() -> None:
    watch = DriftWatch(("pump_phase",), span_blocks=10)
    rng, alerts = random.Random(0), []
    for block in range(0, 20_000, 5):
        drifted = watch.advance(block)
        alerts += watch.drift_alerts(drifted, f"log_{block}", _source(block), block, block)
        level = 0.05 if block < 8_000 else 0.5
        watch.add("pump_phase", rng.uniform(0, 2 * level))
    assert watch.drifts["pump_phase"] >= 1
    assert alerts and all(a.type == "model_drift" and a.severity == "info" for a in alerts)
    first = alerts[0]
    assert first.subject.startswith("pump_phase@log_") and 8_000 <= first.labels[
        "block_number"] < 9_000
    assert first.source["item_ids"] == [first.subject.split("@")[1]]
    assert len(alerts) <= 12  # at most one per detector per 1,000 blocks


def _serve(records: list[ChainRecord], skip: frozenset[int] = frozenset()
           ) -> tuple[list[bytes], Counter[str]]:
    """What the scorer service does with each message (encode, decode, score), without
    Kafka: (alerts, dead-letter reasons). Offsets in ``skip`` are never produced."""
    scorer, alerts, dead = Scorer(), list[bytes](), Counter[str]()
    for offset, record in enumerate(records):
        if offset in skip:
            continue
        try:
            alerts += [a.to_json() for a in
                       scorer.process(codec.decode(codec.encode(record)), _source(offset))]
        except RecordError as exc:
            dead[exc.code] += 1
        except Exception:  # the service dead-letters these as processing_error
            dead["processing_error"] += 1
    return alerts, dead


def test_records_at_block_2_64_do_not_poison_the_state_of_later_records() -> None:
    """Valid-looking records at block 2**64 - 1 are dead-lettered as bad_value; the valid
    records after them score exactly as if they had never been sent."""
    records, _ = _chain(5, 300)
    bad = [dataclasses.replace(r, block_number=2**64 - 1) for r in records[100:130]]
    stream = [*records[:200], *bad, *records[200:]]
    sent_bad = frozenset(range(200, 200 + len(bad)))
    clean, clean_dead = _serve(stream, skip=sent_bad)
    alerts, dead = _serve(stream)
    assert not clean_dead and clean
    assert dead == {"bad_value": len(bad)}
    assert alerts == clean


def test_a_chain_produced_twice_scores_without_processing_errors() -> None:
    """Blocks going backwards (the same chain produced twice into one broker) are input,
    not a crash: every record is scored, and the first pass alerts as it does alone."""
    records, _ = _chain(5, 300)
    once, _ = _serve(list(records))
    alerts, dead = _serve([*records, *records])
    assert not dead
    assert alerts[:len(once)] == once


def test_a_block_at_the_plausible_maximum_does_not_make_later_records_fail() -> None:
    records, _ = _chain(5, 120)
    far = [dataclasses.replace(r, block_number=MAX_BLOCK_NUMBER) for r in records[50:60]]
    _, dead = _serve([*records[:100], *far, *records[100:]])
    assert not dead
