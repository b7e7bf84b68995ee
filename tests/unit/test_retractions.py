"""A retraction withdraws exactly the alerts its block's records raised, once."""

from __future__ import annotations

from pipeline import state
from pipeline.alerts import Alert
from pipeline.records import ChainRecord, Retraction
from pipeline.scoring import Scorer
from producers.synth import SynthConfig, SyntheticChain

SOURCE = {"topic": "t", "partition": 0, "offset": 0}


def _scored(seed: int = 21, blocks: int = 160) -> tuple[Scorer, list[Alert]]:
    scorer, alerts = Scorer(seed=1), []
    for block in SyntheticChain(SynthConfig(seed=seed, blocks=blocks)).blocks():
        records: list[ChainRecord] = [*block.transactions, *block.dex_events]
        for record in records:
            alerts += scorer.process(record, SOURCE)
    return scorer, alerts


def test_a_retraction_names_its_blocks_alerts_and_only_once() -> None:
    scorer, alerts = _scored()
    assert alerts
    block = alerts[-1].labels["block_number"]
    on_block = [a.alert_id for a in alerts if a.labels["block_number"] == block]
    gone = Retraction(block, "0x" + "ab" * 32, "reorg replaced by 0x" + "cd" * 32)
    (retraction,) = scorer.process(gone, SOURCE | {"offset": 99})
    assert retraction.type == "retraction" and retraction.subject == gone.block_hash
    assert retraction.evidence["retracted"] == on_block
    assert retraction.source["item_ids"] == [gone.item_id, *on_block]
    assert retraction.source["offset"] == 99
    assert scorer.process(gone, SOURCE) == []  # its alerts are retracted already
    quiet = Retraction(block + 10_000, "0x" + "ef" * 32, "reorg")
    assert scorer.process(quiet, SOURCE) == []  # a block without alerts: nothing to say
    assert scorer.metrics()["alerts_retraction"] == 1.0


def test_what_may_be_retracted_survives_a_checkpoint() -> None:
    scorer, alerts = _scored()
    block = alerts[0].labels["block_number"]
    restored = Scorer(seed=1)
    restored.load_state(state.decode(state.encode(scorer.state())))
    gone = Retraction(block, "0x" + "ab" * 32, "reorg")
    assert [a.to_json() for a in restored.process(gone, SOURCE)] == \
        [a.to_json() for a in scorer.process(gone, SOURCE)]


def test_a_state_written_before_retractions_still_loads() -> None:
    scorer, _ = _scored(blocks=60)
    old = scorer.state()
    del old["retractable"]
    old["v"] = 2
    fresh = Scorer(seed=1)
    fresh.load_state(old)
    assert fresh.retractions.by_block == {}


def test_a_retraction_record_round_trips_on_the_wire() -> None:
    from pipeline import codec

    r = Retraction(12, "0x" + "ab" * 32, "reorg: replaced by 0x" + "cd" * 32)
    assert codec.decode(codec.encode(r), ("dex_event", "retraction")) == r
    assert r.item_id == "retraction_0x" + "ab" * 32
