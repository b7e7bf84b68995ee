"""The fraud campaigns really happen in the emitted records, as their ground truth says."""

from __future__ import annotations

import statistics
from functools import cache
from typing import Any

import pytest

from pipeline.records import DexEvent, Transaction
from producers.campaigns import CAMPAIGN_TYPES, Campaign, PumpAndDump, schedule_campaigns
from producers.synth import Block, SynthConfig, SyntheticChain

NEW_TYPES = ("rug_pull", "wash_trading", "anomalous_transfer")
COMMON_KEYS = {"campaign_id", "type", "subject", "participants", "start_block", "phases",
               "end_block"}
TYPE_KEYS = {"rug_pull": {"token", "creator", "method"}, "wash_trading": {"cluster"},
             "anomalous_transfer": {"pattern"}}
Truth = dict[str, Any]


@cache
def _run(kind: str, seed: int, difficulty: float = 0.5, blocks: int = 400,
         rate: float = 10.0) -> tuple[tuple[Block, ...], tuple[Truth, ...]]:
    chain = SyntheticChain(SynthConfig(seed=seed, blocks=blocks, campaigns={kind: rate},
                                       difficulty=difficulty))
    return tuple(chain.blocks()), tuple(chain.truth)


def _events(blocks: tuple[Block, ...], pool: str) -> list[DexEvent]:
    return [ev for b in blocks for ev in b.dex_events if ev.pool_address == pool]


def _transactions(blocks: tuple[Block, ...]) -> list[Transaction]:
    return [tx for b in blocks for tx in b.transactions]


def test_registry_and_package_surface() -> None:
    assert set(CAMPAIGN_TYPES) == {"pump_and_dump", *NEW_TYPES}
    assert CAMPAIGN_TYPES["pump_and_dump"] is PumpAndDump
    assert all(isinstance(t, type) and issubclass(t, Campaign)
               for t in CAMPAIGN_TYPES.values())
    assert callable(schedule_campaigns)


@pytest.mark.parametrize("kind", NEW_TYPES)
def test_truth_shape_and_phases_ordered_within_the_campaign(kind: str) -> None:
    blocks, truth = _run(kind, seed=3)
    assert len(truth) == 4
    for c in truth:
        assert COMMON_KEYS | TYPE_KEYS[kind] <= set(c)
        assert c["type"] == kind
        assert c["participants"] == sorted(c["participants"]) and c["participants"]
        phases = list(c["phases"].values())
        assert phases == sorted(phases)
        assert phases[0] == c["start_block"]
        assert all(c["start_block"] <= p < c["end_block"] for p in phases)
    assert blocks[-1].number >= max(c["end_block"] for c in truth) - 1


@pytest.mark.parametrize("kind", NEW_TYPES)
def test_same_seed_same_campaigns_other_seed_differs(kind: str) -> None:
    def ids_and_truth(seed: int) -> tuple[list[str], tuple[Truth, ...]]:
        blocks, truth = _run(kind, seed=seed, blocks=150)
        return [r.item_id for b in blocks for r in (*b.transactions, *b.dex_events)], truth

    first = ids_and_truth(11)
    again = SyntheticChain(SynthConfig(seed=11, blocks=150, campaigns={kind: 10.0}))
    assert [r.item_id for b in again.blocks() for r in (*b.transactions, *b.dex_events)] \
        == first[0]
    assert tuple(again.truth) == first[1]
    other = ids_and_truth(12)
    assert other[0] != first[0] and other[1] != first[1]


def test_small_world_and_short_run_do_not_crash() -> None:
    config = SynthConfig(seed=2, blocks=8, wallets=5, tokens=1,
                         campaigns=dict.fromkeys(CAMPAIGN_TYPES, 4.0))
    chain = SyntheticChain(config)
    assert len(list(chain.blocks())) == 8
    assert {c["type"] for c in chain.truth} == set(CAMPAIGN_TYPES)


# -- rug pull -------------------------------------------------------------------------------------


def _drain(blocks: tuple[Block, ...], c: Truth) -> tuple[int, int, DexEvent]:
    """WETH reserve just before the creator's drain, just after it, and the drain event."""
    events = _events(blocks, c["subject"])
    drain = next(ev for ev in events if ev.block_number == c["phases"]["drain"]
                 and ev.to == c["creator"])
    before = events[events.index(drain) - 1].reserve1
    return before, drain.reserve1, drain


def test_rug_pull_launches_hypes_and_drains_the_pool() -> None:
    methods = set()
    for seed in (3, 4):
        blocks, truth = _run("rug_pull", seed=seed)
        for c in truth:
            methods.add(c["method"])
            events = _events(blocks, c["subject"])
            launch = events[0]
            assert (launch.kind, launch.to, launch.block_number) \
                == ("mint", c["creator"], c["phases"]["launch"])
            assert launch.token0 == c["token"] and launch.reserve1 > 0
            hype = [ev for ev in events if ev.kind == "swap" and ev.to in c["participants"]
                    and c["phases"]["hype"] <= ev.block_number < c["phases"]["drain"]]
            assert len(hype) >= 8 and all(ev.amount1_in > 0 for ev in hype)  # buys
            before, after, drain = _drain(blocks, c)
            assert before > launch.reserve1  # the hype lifted the pool
            assert after <= 0.2 * before, (c["campaign_id"], before, after)
            assert drain.kind == ("burn" if c["method"] == "remove_liquidity" else "swap")
    assert methods == {"remove_liquidity", "mint_and_sell"}


def test_rug_pull_difficulty_zero_takes_more_weth_than_difficulty_one() -> None:
    def drained(difficulty: float) -> float:
        blocks, truth = _run("rug_pull", seed=3, difficulty=difficulty)
        return statistics.mean(b - a for b, a, _ in (_drain(blocks, c) for c in truth))

    assert drained(0.0) > 4 * drained(1.0)


# -- wash trading ---------------------------------------------------------------------------------


def _wash_stats(blocks: tuple[Block, ...], c: Truth) -> dict[str, int]:
    """Swap counts, WETH volume and net token position, cluster vs everyone else."""
    cluster = set(c["cluster"])
    stats = dict.fromkeys(("cluster", "normal", "cluster_weth", "normal_weth", "net",
                           "bought"), 0)
    for ev in _events(blocks, c["subject"]):
        if ev.kind != "swap" or not c["start_block"] <= ev.block_number < c["end_block"]:
            continue
        who = "cluster" if ev.to in cluster else "normal"
        stats[who] += 1
        stats[who + "_weth"] += ev.amount1_in + ev.amount1_out
        if who == "cluster":
            stats["net"] += ev.amount0_out - ev.amount0_in
            stats["bought"] += ev.amount0_out
    return stats


def test_wash_trading_cluster_outtrades_the_pool_with_no_net_position() -> None:
    blocks, truth = _run("wash_trading", seed=3)
    transfers = [tx for tx in _transactions(blocks) if tx.input.startswith("0xa9059cbb")]
    for c in truth:
        cluster = set(c["cluster"])
        assert 3 <= len(cluster) <= 8 and c["cluster"] == c["participants"]
        stats = _wash_stats(blocks, c)
        assert stats["cluster"] > stats["normal"], (c["campaign_id"], stats)
        assert stats["cluster_weth"] > 2 * stats["normal_weth"]
        assert abs(stats["net"]) <= 0.01 * stats["bought"]
        passed_on = [tx for tx in transfers if tx.from_address in c["cluster"]
                     and c["start_block"] <= tx.block_number < c["end_block"]]
        assert passed_on and all("0x" + tx.input[34:74] in cluster for tx in passed_on)


def test_wash_trading_difficulty_zero_is_louder_than_difficulty_one() -> None:
    def volume_multiple(difficulty: float) -> float:
        blocks, truth = _run("wash_trading", seed=3, difficulty=difficulty)
        stats = [_wash_stats(blocks, c) for c in truth]
        return sum(s["cluster_weth"] for s in stats) / sum(s["normal_weth"] for s in stats)

    assert volume_multiple(0.0) > 4 * volume_multiple(1.0) > 4


# -- anomalous transfer ---------------------------------------------------------------------------


def _sent_by(blocks: tuple[Block, ...], sender: str) -> list[Transaction]:
    return [tx for tx in _transactions(blocks) if tx.from_address == sender]


def _check_anomalous(blocks: tuple[Block, ...], c: Truth) -> None:
    origin, value, phases = c["subject"], c["value"], c["phases"]
    funding = [tx for tx in _transactions(blocks) if tx.to_address == origin]
    assert [(tx.block_number, tx.value) for tx in funding] == [(phases["fund"], value)]
    sent = _sent_by(blocks, origin)
    assert sent and sent[0].block_number == phases["move"]
    if c["pattern"] == "dormant":
        assert phases["move"] - phases["fund"] >= 20
        assert len(sent) == 1 and sent[0].value >= 0.9 * value
        assert sent[0].to_address == c["recipients"][0]
    elif c["pattern"] == "fan_out":
        assert sorted(str(tx.to_address) for tx in sent) == c["recipients"]
        assert len(sent) >= 8 and sum(tx.value for tx in sent) >= 0.95 * value
        assert all(phases["move"] <= tx.block_number <= phases["fan_out_end"] for tx in sent)
    else:
        holder, amount = origin, value
        for step, hop in enumerate(c["hops"]):
            forward = next(tx for tx in _sent_by(blocks, holder) if tx.to_address == hop)
            assert forward.block_number == phases["move"] + step  # consecutive blocks
            assert forward.value >= 0.7 * amount
            holder, amount = hop, forward.value
        assert phases["peel_end"] == phases["move"] + len(c["hops"]) - 1


def test_anomalous_transfers_appear_with_their_participants() -> None:
    patterns = set()
    for seed in (3, 5):
        blocks, truth = _run("anomalous_transfer", seed=seed)
        for c in truth:
            patterns.add(c["pattern"])
            _check_anomalous(blocks, c)
    assert patterns == {"dormant", "fan_out", "peel_chain"}


def test_anomalous_transfer_difficulty_zero_moves_more_than_difficulty_one() -> None:
    def median_value(difficulty: float) -> float:
        return statistics.median(int(c["value"]) for c in
                                 _run("anomalous_transfer", seed=3, difficulty=difficulty)[1])

    assert median_value(0.0) > 20 * median_value(1.0)
