"""pipeline.risk_evaluation on hand-made pools whose figures are worked out by hand."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from consumers.evaluate import PrequentialLog, RecordingScorer
from consumers.report import RiskReport, Timeline, write_report
from consumers.tasks import Task, TaskManager
from pipeline.evaluation import crash_events
from pipeline.features import WETH
from pipeline.records import DexEvent
from pipeline.risk_evaluation import (
    ScoreIndex,
    before_event_pairs,
    evaluate_risk,
    pool_outcomes,
    priced_weth_pools,
    roc_points,
    split_of,
)

TOKEN = "0x" + "12" * 20
HEALTHY = "0x" + "34" * 20
OTHER = "0x" + "56" * 20
A = "0x" + "aa" * 19 + "01"  # report: drained at 4000, flagged 2 h (540 blocks) ahead
B = "0x" + "bb" * 19 + "03"  # report: fast rug, drained 100 blocks after its first event
C = "0x" + "cc" * 19 + "05"  # report: never drained, flagged
D = "0x" + "dd" * 19 + "02"  # tune: never drained, never flagged
E = "0x" + "ab" * 19 + "04"  # tune: never drained, created late (block 19000)
H = "0x" + "ee" * 19 + "07"  # report: a healthy token, no WETH side, flagged
N = "0x" + "ff" * 19 + "09"  # report: no WETH side, its token1 reserve collapses: ignored
S = "0x" + "5a" * 19 + "0b"  # report: WETH side, peak 0.5 WETH: outside the universe
END = 20_000


def _sync(pool: str, block: int, r0: float, r1: float, *, token0: str = TOKEN,
          token1: str = WETH) -> DexEvent:
    return DexEvent(pool_address=pool, token0=token0, token1=token1, kind="sync",
                    block_number=block, block_timestamp=block,
                    transaction_hash="0x" + "00" * 32, log_index=0,
                    reserve0=int(r0 * 1e18), reserve1=int(r1 * 1e18))


def _events() -> list[DexEvent]:
    rows = [
        _sync(A, 1000, 100, 10), _sync(A, 2000, 100, 10), _sync(A, 4000, 100, 0.1),
        _sync(B, 1000, 100, 10), _sync(B, 1100, 100, 0.1),
        _sync(C, 1000, 100, 10), _sync(C, 8000, 100, 10), _sync(C, END, 100, 10),
        _sync(D, 1000, 100, 10), _sync(D, END, 100, 10),
        _sync(E, 19_000, 100, 10), _sync(E, END, 100, 10),
        _sync(H, 1000, 100, 10, token0=HEALTHY, token1=OTHER),
        _sync(N, 1000, 100, 10, token0=OTHER, token1=TOKEN),
        _sync(N, 3000, 100, 0.1, token0=OTHER, token1=TOKEN),
        _sync(S, 1000, 100, 0.5), _sync(S, 3000, 100, 0.01),
    ]
    return sorted(rows, key=lambda e: e.block_number)


SCORES = [(A, 1000, 0.1), (A, 2000, 0.3), (A, 3460, 0.9), (A, 4000, 0.95),
          (B, 1000, 0.5), (B, 1050, 0.9),
          (C, 1000, 0.2), (C, 2000, 0.8), (C, 8000, 0.4),
          (D, 1000, 0.05), (D, 9000, 0.1),
          (E, 19_000, 0.99)]
ALERTS = [(B, 1050), (H, 1500), (C, 2000), (A, 3460), (A, 5000)]


def test_split_by_the_last_byte() -> None:
    assert [split_of(p) for p in (A, B, C, D, E)] == ["report"] * 3 + ["tune"] * 2


def test_outcomes() -> None:
    events = _events()
    assert N not in {c.pool for c in crash_events(events)}  # no WETH side: no crash
    out = pool_outcomes(events, [WETH.upper(), HEALTHY.upper()])
    assert {p for p, o in out.items() if o.universe} == {A, B, C, D, E}
    assert (out[A].event_block, out[A].event_kind, out[A].age_at_event) == \
        (4000, "liquidity_drain", 3000)
    assert (out[B].event_block, out[B].age_at_event) == (1100, 100)
    assert out[N].event_block is None and not out[N].weth_side
    assert out[S].weth_side and not out[S].universe and out[S].event_block is None
    assert out[E].first_block == 19_000
    # WETH is in healthy_tokens.csv but is no evidence of legitimacy
    assert {p for p, o in out.items() if o.healthy} == {H}
    assert priced_weth_pools(events) == {A, B, C, D, E, S}


def test_last_score_at_or_before() -> None:
    index = ScoreIndex.build([(A, 5, 0.1), (A, 9, 0.2), (A, 9, 0.3), (A, 7, 0.4)])
    assert [index.at(A, b) for b in (4, 5, 6, 7, 9, 100)] == [None, 0.1, 0.1, 0.4, 0.3, 0.3]
    assert index.at(B, 10) is None


def test_figures_by_hand() -> None:
    result = evaluate_risk(pool_outcomes(_events(), [HEALTHY]), SCORES, ALERTS, END)
    s = result.summary
    assert (s["universe_pools"], s["event_pools"], s["healthy_pools"]) == (5, 2, 1)
    assert s["events_by_kind"] == {"liquidity_drain": 2, "price_crash": 0}
    # ages: 1 h = first_block + 270; B is gone by then, E (created at 19,000) is observed
    assert sorted(result.age_pairs["all"]["1h"]) == [(0.05, 0), (0.1, 1), (0.2, 0), (0.99, 0)]
    assert s["all"]["by_age"]["1h"]["roc_auc"] == pytest.approx(1 / 3)
    assert s["report"]["by_age"]["1h"]["roc_auc"] == 0.0  # A 0.1 against C 0.2
    assert s["tune"]["by_age"]["1h"]["roc_auc"] is None  # D and E: negatives only
    assert sorted(result.age_pairs["all"]["6h"]) == [(0.05, 0), (0.3, 1), (0.8, 0)]
    assert s["all"]["by_age"]["24h"] == {"roc_auc": None, "pr_auc": None,
                                        "positives": 0, "negatives": 2}
    # before the event: A at 3,730 (0.9, age 2,730) against C and D at 1,000 + 2,730;
    # E's 19,000 + 2,730 is past the stream's end; B has no score 270 blocks before 1,100
    assert sorted(result.before_pairs["all"]["1h"]) == [(0.05, 0), (0.8, 0), (0.9, 1)]
    assert s["all"]["before_event"]["1h"]["roc_auc"] == 1.0
    assert sorted(result.before_pairs["all"]["6h"]) == [(0.05, 0), (0.3, 1), (0.8, 0)]
    assert s["all"]["before_event"]["6h"]["pr_auc"] == 0.5
    assert s["all"]["before_event"]["24h"]["positives"] == 0
    assert sorted(result.before_pairs["report"]["1h"]) == [(0.8, 0), (0.9, 1)]
    alerts = s["all"]["alerts"]
    assert alerts["lived_1h_pools"] == 1 and alerts["lived_1h_flagged_1h_ahead_share"] == 1.0
    assert alerts["lived_6h_pools"] == 1 and alerts["lived_6h_flagged_6h_ahead_share"] == 0.0
    assert (alerts["flagged_1h_ahead_share"], alerts["flagged_6h_ahead_share"],
            alerts["flagged_24h_ahead_share"]) == (0.5, 0.0, 0.0)
    assert alerts["fast_pools"] == 1 and alerts["fast_flagged_before_event_share"] == 1.0
    assert alerts["never_event_flagged_share"] == pytest.approx(1 / 3)  # C of C, D, E
    assert (alerts["healthy_flagged"], alerts["healthy_flagged_share"]) == (1, 1.0)
    assert alerts["lead_blocks"] == [50, 540]
    tune = s["tune"]["alerts"]
    assert (tune["event_pools"], tune["never_event_flagged_share"], tune["healthy_pools"]) == \
        (0, 0.0, 0)
    assert tune["flagged_1h_ahead_share"] is None


def test_matching_is_deterministic_and_sampled() -> None:
    outcomes = pool_outcomes(_events(), [])
    index = ScoreIndex.build(SCORES)
    pairs = before_event_pairs(outcomes, index, 270, END, negatives_per_positive=1)
    key = {n: hashlib.sha256(f"{A}:270:{n}".encode()).hexdigest() for n in (C, D)}
    expected = {C: 0.8, D: 0.05}[min(key, key=key.__getitem__)]
    assert pairs == [(0.9, 1), (expected, 0)]
    assert before_event_pairs(outcomes, index, 270, END, negatives_per_positive=1) == pairs


def test_roc_points() -> None:
    assert roc_points([(0.9, 1), (0.8, 0), (0.7, 1), (0.1, 0)]) == \
        [(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
    assert roc_points([(0.5, 1)]) == []


def test_recording_scorer_logs_the_named_rule_and_the_log_drains() -> None:
    scorer = RecordingScorer(risk_rule="rug_pull")  # any dex rule; rug_risk by default
    assert scorer.risk_rule is not None and scorer.risk_rule.score_log == []
    assert RecordingScorer(risk_rule="no_such_rule").risk_rule is None
    tasks = cast("TaskManager", SimpleNamespace(tasks={0: Task(0, scorer)}))
    recorded = PrequentialLog()
    recorded.collect(tasks)
    assert recorded.risk_rule == "rug_pull" and recorded.risk_scores == []
    for event in _events()[:4]:
        scorer.process(event, {"topic": "test", "partition": 0, "offset": 0})
        recorded.collect(tasks)
        assert scorer.risk_rule.score_log == []  # what a checkpoint would see
    assert [(p, b) for p, b, _ in recorded.risk_scores] == \
        [(e.pool_address, e.block_number) for e in _events()[:4]]


def test_report_tables_and_plots_agree(tmp_path: Path) -> None:
    outcomes = pool_outcomes(_events(), [HEALTHY])
    result = evaluate_risk(outcomes, SCORES, ALERTS, END)
    summary = {"rug_risk": {"rule": "rug_risk"} | result.summary}
    roc = {f"age {k}": v for k, v in result.age_pairs["report"].items()} | \
        {f"{k} before the event": v for k, v in result.before_pairs["report"].items()}
    timeline = Timeline("rug_risk caught: " + A, blocks=[1000, 4000], prices=[0.1, 0.001],
                        liquidity=[10, 0.1], alerts=[(3460, "rug_risk"), (4000, "rug_pull")],
                        phases={"liquidity_drain": 4000})
    risk = RiskReport("rug_risk", "report", roc=roc,
                      lead_blocks=result.summary["report"]["alerts"]["lead_blocks"],
                      timelines=[timeline])
    write_report(tmp_path, "t", summary, risk=risk)
    for name in ("rug_risk_lead_time.png", "rug_risk_roc_by_age.png",
                 "rug_risk_roc_before_event.png", "rug_risk_timeline_1.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    page = (tmp_path / "report.html").read_text()
    assert "<h2>rug_risk</h2>" in page and "report half" in page
    # the report half's 1 h-before figure: A (0.9) against C (0.8): AUC 1
    assert "<tr><th>before the event 1h</th><td>1.000</td><td>1.000</td><td>1</td><td>1</td>" \
        in page
    assert "median lead 1." in page  # 50 and 540 blocks: 295 / 270 h
    # the lead-time plot's caption counts what the table's shares count
    assert "2 pools alerted at or before it, 1 at least 1 h ahead, 0 at least 6 h ahead" in page
    shares = result.summary["report"]["alerts"]
    assert round(shares["flagged_1h_ahead_share"] * shares["event_pools"]) == 1
    assert json.loads((tmp_path / "summary.json").read_text())["rug_risk"]["report"][
        "alerts"]["lead_blocks"] == [50, 540]
