"""Evaluation: the matching rule, per-type figures and delays, exact prequential AUCs, and
liquidity drains / price crashes defined from a DEX stream."""

from __future__ import annotations

import itertools
import random
import statistics
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.alerts import Alert
from pipeline.evaluation import (
    average_precision,
    crash_events,
    evaluate_events,
    evaluate_synthetic,
    matches,
    merge_reports,
    roc_auc,
)
from pipeline.features import WETH
from pipeline.records import DexEvent

POOL, OTHER = "0x" + "aa" * 20, "0x" + "bb" * 20
PUMP = {"campaign_id": "p-0", "type": "pump_and_dump", "subject": POOL, "participants": [],
        "start_block": 100, "end_block": 140,
        "phases": {"accumulation": 100, "pump": 125, "dump": 138}}
ANOMALY = {"campaign_id": "a-0", "type": "anomalous_transfer", "subject": "0x" + "01" * 20,
           "participants": ["0x" + "01" * 20, "0x" + "02" * 20], "start_block": 10,
           "end_block": 15, "phases": {"fund": 10, "move": 12}}


def _alert(kind: str, subject: str, block: int, item: str = "x") -> Alert:
    return Alert.build(type=kind, severity="high", score=0.9, subject=subject, detector="d",
                       model_version="1", evidence={}, source={"item_ids": [item]},
                       event_time=block, detected_at=block, labels={"block_number": block})


def test_matching_rule() -> None:
    assert matches(_alert("pump_and_dump", POOL, 127), PUMP)
    assert matches(_alert("pump_and_dump", POOL, 160), PUMP)  # within the grace
    assert not matches(_alert("pump_and_dump", POOL, 161), PUMP)
    assert not matches(_alert("pump_and_dump", POOL, 99), PUMP)
    assert not matches(_alert("rug_pull", POOL, 127), PUMP)
    assert not matches(_alert("pump_and_dump", OTHER, 127), PUMP)
    assert matches(_alert("anomalous_transfer", "0x" + "02" * 20, 12), ANOMALY)  # participant
    assert not matches(_alert("pump_and_dump", OTHER, 127),
                       PUMP | {"participants": [OTHER]})  # only for address subjects


def test_per_type_figures_and_delays() -> None:
    alerts = [_alert("pump_and_dump", POOL, 127, "a"), _alert("pump_and_dump", POOL, 130, "b"),
              _alert("pump_and_dump", OTHER, 127, "c"), _alert("model_drift", "m@x", 5)]
    report = evaluate_synthetic(alerts, [PUMP, ANOMALY], events=20_000)
    pump = report["pump_and_dump"]
    assert (pump["alerts"], pump["true_alerts"], pump["detected"]) == (3, 2, 1)
    assert pump["precision"] == 2 / 3 and pump["recall"] == 1.0 and pump["f1"] == 0.8
    assert pump["false_per_10k"] == 0.5
    assert (pump["median_delay_from_start"], pump["median_delay_from_onset"],
            pump["median_delay_vs_move"]) == (27.0, 2.0, -11.0)
    assert pump["before_move_share"] == 1.0
    assert pump["hits"][0]["first_alert_block"] == 127
    anomaly = report["anomalous_transfer"]
    assert anomaly["recall"] == 0.0 and anomaly["precision"] is None
    assert report["model_drift"]["alerts"] == 1 and report["model_drift"]["recall"] is None
    merged = merge_reports([report, report], events=40_000)
    assert merged["pump_and_dump"]["campaigns"] == 2
    assert merged["pump_and_dump"]["precision"] == 2 / 3


@given(st.lists(st.tuples(st.sampled_from([0.1, 0.2, 0.5, 0.7, 0.9]), st.integers(0, 1)),
                min_size=2, max_size=40))
@settings(max_examples=200, deadline=None)
def test_roc_auc_is_the_pairwise_probability(pairs: list[tuple[float, int]]) -> None:
    pos = [s for s, y in pairs if y]
    neg = [s for s, y in pairs if not y]
    auc = roc_auc(pairs)
    if not pos or not neg:
        assert auc is None
        return
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0
               for p, n in itertools.product(pos, neg))
    assert auc is not None and abs(auc - wins / (len(pos) * len(neg))) < 1e-12


def test_average_precision() -> None:
    assert average_precision([(0.9, 1), (0.8, 1), (0.1, 0)]) == 1.0
    assert average_precision([(0.5, 0)]) is None
    rng = random.Random(0)
    noise = [(rng.random(), rng.randrange(2)) for _ in range(2000)]
    value = average_precision(noise)
    assert value is not None and 0.4 < value < 0.6


def _sync(block: int, weth: float, tokens: float, pool: str = POOL) -> DexEvent:
    return DexEvent(pool_address=pool, token0="0x" + "cc" * 20, token1=WETH, kind="sync",
                    block_number=block, block_timestamp=block, transaction_hash="0x" + "00" * 32,
                    log_index=block, reserve0=int(tokens * 1e18), reserve1=int(weth * 1e18))


def test_crash_events_need_a_collapse_without_recovery() -> None:
    drained = [_sync(1, 100, 100), _sync(5, 120, 90), _sync(9, 5, 2000), _sync(20, 6, 1900)]
    recovered = [_sync(b, w, 100, OTHER) for b, w in ((1, 100), (5, 5), (9, 90))]
    empty_rows = [DexEvent(**{**_sync(7, 0, 0).to_dict(), "kind": "burn"})]
    crashes = crash_events([*drained, *recovered, *empty_rows])
    kinds = {(c.pool, c.kind, c.block) for c in crashes}
    assert kinds == {(POOL, "liquidity_drain", 9), (POOL, "price_crash", 9)}
    alerts = [_alert("rug_pull", POOL, 9), _alert("rug_pull", OTHER, 5)]
    scored = evaluate_events(alerts, crashes)
    assert (scored["precision"], scored["recall"], scored["median_delay_vs_event"]) == (
        0.5, 1.0, 0.0)


def test_a_pool_without_a_weth_side_has_no_crash() -> None:
    usdc, token = "0x" + "a0" * 20, "0x" + "bb" * 20
    events = [DexEvent(pool_address="0x" + "77" * 20, token0=usdc, token1=token, kind="sync",
                       block_number=b, block_timestamp=b * 13,
                       transaction_hash=f"0x{b:064x}", log_index=0,
                       reserve0=10**24, reserve1=r * 10**18)
              for b, r in enumerate([50, 50, 1, 1], start=1)]
    assert crash_events(events) == []


def test_the_report_plots_what_its_table_says(tmp_path: Path) -> None:
    """The delay histogram counts each type from the table's reference phase, the PR curve's
    last point is the table's precision and recall (recall over campaigns, not alerts), and
    the page lists every campaign."""
    from consumers.evaluate import _delays, _scored_alerts, headline
    from consumers.report import campaign_pr_curve, write_report

    rug = {"campaign_id": "r-0", "type": "rug_pull", "subject": OTHER, "participants": [],
           "start_block": 200, "end_block": 230,
           "phases": {"launch": 200, "hype": 205, "drain": 226}}
    alerts = [_alert("pump_and_dump", POOL, 127, "a"), _alert("pump_and_dump", POOL, 130, "b"),
              _alert("pump_and_dump", OTHER, 127, "c"), _alert("rug_pull", OTHER, 226, "d")]
    report = evaluate_synthetic(alerts, [PUMP, ANOMALY, rug], events=20_000)
    delays = _delays(report)
    for kind in ("pump_and_dump", "rug_pull"):
        assert statistics.median(delays[kind]) == headline(kind, report[kind])[
            "median_delay_blocks"]
    assert delays["rug_pull"] == [0]  # in the drain's block, not 26 blocks after the launch
    scored = _scored_alerts(alerts, report)
    assert scored["anomalous_transfer"] == ([], 1)  # campaigns, no alerts: no curve
    for kind in ("pump_and_dump", "rug_pull"):
        last = campaign_pr_curve(*scored[kind])[-1]
        assert last == (report[kind]["recall"], report[kind]["precision"]), kind
    page = write_report(tmp_path, "t", {"by_type": {k: headline(k, v) for k, v in
                                                    report.items()}},
                        hits=[h for m in report.values() for h in m.get("hits", [])])
    text = page.read_text()
    assert all(cid in text for cid in ("p-0", "a-0", "r-0")) and "false_per_10k" in text


def test_replay_reports_draw_roc_and_event_delays(tmp_path: Path) -> None:
    """blte's labelled pairs get a ROC beside the PR curve, uniswap-v2's rug_pull alerts a
    delay histogram against the events; captions give the table's figures."""
    from consumers.report import write_report

    pairs = [(0.9, 1), (0.8, 0), (0.7, 1), (0.1, 0)]
    page = write_report(tmp_path, "t", {}, scored={"supervised": pairs},
                        event_delays={"rug_pull": [-2, 0, 0, 1, 5]})
    text = page.read_text()
    for name in ("roc.png", "precision_recall.png", "rug_pull_delay.png"):
        assert (tmp_path / name).stat().st_size > 0 and f'src="{name}"' in text
    assert "5 detected events, median 0" in text
