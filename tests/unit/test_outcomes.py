"""Pools' delayed outcomes: no label before its release block, whatever the topic order."""

from __future__ import annotations

import random

from pipeline import state
from pipeline.records import DexEvent
from pipeline.rules import RuleSet
from pipeline.scoring import Scorer
from pipeline.scoring.outcomes import PoolOutcomes
from producers.synth import SynthConfig, SyntheticChain


def _x(liquidity: float, peak: float, **extra: float) -> dict[str, float]:
    return {"liquidity_weth": liquidity, "liquidity_peak_weth": peak,
            "drawdown": 1 - liquidity / peak, "mark": 0.0} | extra


def test_labels_come_at_their_release_block_and_never_before() -> None:
    horizon = 100
    outcomes = PoolOutcomes(horizon_blocks=horizon, min_gap_blocks=5)
    rng = random.Random(1)
    taken: dict[tuple[str, float], int] = {}  # (pool, mark) -> block of the snapshot
    released: list[tuple[str, float, int, int]] = []  # pool, mark, label, release block
    drained = {"p3": 400, "p7": 90}
    ended: dict[str, int] = {}  # pool -> the block its drain was seen
    for block in range(1, 600):
        for pool in (f"p{i}" for i in range(10)):
            if rng.random() < 0.5:
                continue
            if pool in drained and block >= drained[pool]:
                ended.setdefault(pool, block)
                x = _x(0.05, 10.0, mark=float(block), pool=float(pool[1:]))
            else:
                x = _x(10.0, 10.0, mark=float(block), pool=float(pool[1:]))
            for snapshot, y in outcomes.observe(pool, block, x):  # of any pool
                released.append((f"p{snapshot['pool']:.0f}", snapshot["mark"], y, block))
            kept = outcomes.snapshots.get(pool)
            if kept and kept[-1][0] == block:
                taken[(pool, float(block))] = block
    assert released and {y for *_, y, _ in released} == {0, 1}
    for pool, mark, y, at in released:
        snapshot_block = taken[(pool, mark)]
        if y == 0:  # survived: released once its horizon passed, not earlier
            assert at >= snapshot_block + horizon
            assert pool not in ended or snapshot_block + horizon <= ended[pool]
        else:  # drained: released at the drain, for snapshots of the horizon before it
            assert at == ended[pool]
            assert 1 <= at - snapshot_block <= horizon
    assert {pool for pool, _, y, _ in released if y} == set(drained)


def test_outcomes_state_round_trips() -> None:
    outcomes = PoolOutcomes(horizon_blocks=50, min_gap_blocks=2)
    for block in range(1, 40):
        outcomes.observe("a", block, _x(5.0, 5.0, mark=float(block)))
    copy = PoolOutcomes(horizon_blocks=50, min_gap_blocks=2)
    copy.load_state(state.decode(state.encode({"o": outcomes.state()}))["o"])
    later = [(block, _x(5.0, 5.0, mark=float(block))) for block in range(40, 120)]
    assert [outcomes.observe("a", b, x) for b, x in later] == \
        [copy.observe("a", b, x) for b, x in later]


def test_the_risk_model_learns_the_same_whatever_the_topics_interleaving() -> None:
    """Outcomes come from the DEX stream alone: merging in transactions and labels in any
    order leaves what the risk model learnt, and its scores, unchanged."""
    chain = SyntheticChain(SynthConfig(seed=9, blocks=400, campaigns={"rug_pull": 20.0}))
    records = [r for b in chain.blocks() for r in (*b.transactions, *b.dex_events)]
    dex = [r for r in records if isinstance(r, DexEvent)]
    txs = [r for r in records if not isinstance(r, DexEvent)]
    rules = RuleSet.load()

    def learnt(seed: int) -> tuple[list[int], dict[str, object]]:
        rng, scorer = random.Random(seed), Scorer(rules=rules)
        queues = [list(txs), list(dex)]
        while any(queues):
            queue = rng.choice([q for q in queues if q])
            scorer.process(queue.pop(0), {"topic": "t", "partition": 0, "offset": 0})
        risk = next(r for r in scorer.rules if r.name == "rug_risk")
        return list(risk.detector.labels), scorer.dex.state()["rules"]["rug_risk"]

    first = learnt(1)
    assert first == learnt(2) == learnt(3)
