"""pipeline.pump_evaluation and consumers.pump_report on three hand-made pumps.

Times are seconds from each pump's ``announced_at`` (A, B, C: whole days, so every chunk
boundary of 5, 15 and 25 s falls on them):

* P1 (tune): trades at -2 d (first), -100 s, -1 ms (the base, 1.0), +3 s (t0, 1.1), +10 s
  (peak, 1.5), +20 s, +4000 s (2.0, after the hour: not the peak), +2 d. Move 0.5, peak_s 7.
  Alerts: -1 d and -61 s (false), -60 s (belongs: delay -63 s, before the peak),
  t0 + 3600 s (belongs, not first), t0 + 3600.001 s (after).
* P2 (report): no trade before B; trades at 0 (t0, base 2.0), +5 s (peak, 3.0), +30 s,
  +40 s (3.0 again: the earlier peak stands), +100 s, +3600 s, +3605 s. Move 0.5, peak_s 5.
  Alert at +20 s: delay 20 s, after the peak. Lead-in empty (0 days).
* P3 (tune): trades at -1 d, -1 s (1.0), +2 s (t0 = peak, 1.05), +50 s. Move 0.05: small,
  not detected. An alert at -2 d comes before the stream's first trade.

Chunks at S = 5 s (chunk ``c`` covers [5c, 5c + 5) s from the announcement), hand-labelled:

* P1: 0 [0, 5) and 2 [10, 15) overlap the rise [3, 10]: positive; 4 [20, 25) is in the dump:
  ignored; -34560, -20, -1 (ends at -1 ms, before t0), 800 (+4000 s, past the hour) and
  34560: negative;
* P2: 0 and 1 [5, 10) positive (1 starts at the peak); 6, 8, 20 and 720 ([3600, 3605) starts
  at the hour's end) ignored; 721 (+3605 s) negative;
* P3: 0 holds t0 = peak: positive; 10 ignored; -17280 and -1 negative.

Scores at threshold 0.5: P1 chunk 0 0.9 (TP), 2 0.1 (FN), 4 0.95 (ignored), -20 0.9 (FP), 34560
unscored (TN), the rest 0 (TN); P2 0, 1 0.9 (TP), its ignored ones 0.9, 721 0.9 (FP); P3 0
exactly 0.5 (TP: max >= threshold), the rest 0. So at 5 s: TP 4, FP 2, FN 1, TN 6, ignored
6: precision 2/3, recall 4/5, F1 8/11; tune (P1, P3) TP 2 FP 1 FN 1; report TP 2 FP 1 FN 0.
"""

from __future__ import annotations

import csv
import html
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from consumers.pump_report import write_pump_report
from pipeline.errors import SourceError
from pipeline.pump_evaluation import (
    DAY_MS,
    HOUR_MS,
    IGNORED,
    NEGATIVE,
    POSITIVE,
    PumpAlert,
    alert_kind,
    chunk_labels,
    evaluate_pumps,
    iso_ms,
    prf,
    pump_windows,
    split_pumps,
)
from pipeline.pump_evaluation import _sort_trades as sort_trades

A = 10 * DAY_MS
B = A + 10 * DAY_MS
C = A + 20 * DAY_MS
S = 1000  # ms per second
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pump-telegram-binance"
TRADES: dict[str, tuple[int, list[tuple[float, float]]]] = {  # pump -> (announced, [(s, price)])
    "P1": (A, [(-2 * 86_400, 1.0), (-100, 1.0), (-0.001, 1.0), (3, 1.1), (10, 1.5), (20, 1.2),
               (4000, 2.0), (2 * 86_400, 1.0)]),
    "P2": (B, [(0, 2.0), (5, 3.0), (30, 2.5), (40, 3.0), (100, 2.2), (3600, 2.0), (3605, 2.0)]),
    "P3": (C, [(-86_400, 1.0), (-1, 1.0), (2, 1.05), (50, 1.01)]),
}
T0 = {"P1": A + 3 * S, "P2": B, "P3": C + 2 * S}
ALERTS: list[PumpAlert] = [
    ("P1", A - DAY_MS, 0.7, "f1"), ("P1", A - 61 * S, 0.7, "f2"),
    ("P1", A - 60 * S, 0.8, "p1"), ("P1", T0["P1"] + HOUR_MS, 0.9, "p1b"),
    ("P1", T0["P1"] + HOUR_MS + 1, 0.9, "after"), ("P2", B + 20 * S, 0.6, "p2"),
    ("P3", C - 2 * DAY_MS, 0.9, "early"), ("X", A, 0.9, "unknown stream"),
]
SCORES_5 = {("P1", A // 5000 + c): v for c, v in ((0, 0.9), (2, 0.1), (4, 0.95), (-20, 0.9),
                                                  (-34560, 0.0), (-1, 0.0), (800, 0.0))}
SCORES_5 |= {("P2", B // 5000 + c): v for c, v in ((0, 0.9), (1, 0.9), (6, 0.9), (8, 0.9),
                                                   (20, 0.9), (720, 0.9), (721, 0.9))}
SCORES_5 |= {("P3", C // 5000 + c): v for c, v in ((0, 0.5), (10, 0.0), (-17280, 0.0),
                                                   (-1, 0.0))}
SCORES_5 |= {("X", 1): 0.9, ("P1", 12_345): 0.9}  # no trades there


def _trades() -> pd.DataFrame:
    rows = [{"pump_id": pump, "timestamp_ms": at + round(sec * S), "side": "buy",
             "price": price, "amount": 1.0, "quote_volume": price}
            for pump, (at, points) in TRADES.items() for sec, price in points]
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1.0, random_state=7).reset_index(drop=True)  # order is not given


def _pumps() -> pd.DataFrame:
    rows = [{"pump_id": p, "venue": "binance", "market": f"{p}/BTC",
             "announced_at": iso_ms(at).replace(".000", "")} for p, (at, _) in TRADES.items()]
    return pd.DataFrame(rows[::-1])  # not in announcement order


def _evaluate() -> dict[str, Any]:
    tune, _ = split_pumps(_pumps())
    return evaluate_pumps(_trades(), _pumps(), ALERTS, {5: SCORES_5, 15: {}, 25: {}}, 0.5,
                          tune)


def _row(summary: dict[str, Any], pump: str) -> dict[str, Any]:
    return next(r for r in summary["pumps"] if r["pump_id"] == pump)


def test_t0_peak_and_move() -> None:
    windows = pump_windows(_trades(), _pumps())
    p1, p2, p3 = windows["P1"], windows["P2"], windows["P3"]
    assert (p1.t0_ms, p1.peak_ms, p1.base_price, p1.peak_price) == (A + 3 * S, A + 10 * S, 1.0, 1.5)
    assert p1.move == pytest.approx(0.5)  # the +4000 s price (2.0) is past the hour
    assert (p2.t0_ms, p2.peak_ms, p2.base_price) == (B, B + 5 * S, 2.0)  # no trade before B
    assert p2.move == pytest.approx(0.5)  # the tie at +40 s keeps the earlier peak
    assert (p3.t0_ms, p3.peak_ms) == (C + 2 * S, C + 2 * S)
    assert p3.move == pytest.approx(0.05)
    assert p1.first_ms == A - 2 * DAY_MS and p1.lead_in_days == pytest.approx(2 - 60 / 86_400)
    assert p2.lead_in_days == 0.0


def test_alert_kinds_at_the_bounds() -> None:
    w = pump_windows(_trades(), _pumps())["P1"]
    assert alert_kind(w, A - 60 * S) == "pump"
    assert alert_kind(w, A - 60 * S - 1) == "false"
    assert alert_kind(w, w.first_ms) == "false"
    assert alert_kind(w, w.first_ms - 1) == "before_first_trade"
    assert alert_kind(w, w.t0_ms + HOUR_MS) == "pump"
    assert alert_kind(w, w.t0_ms + HOUR_MS + 1) == "after"


def test_per_pump_rows() -> None:
    summary = _evaluate()
    assert [r["pump_id"] for r in summary["pumps"]] == ["P1", "P2", "P3"]
    p1, p2, p3 = (_row(summary, p) for p in ("P1", "P2", "P3"))
    assert p1["half"] == "tune" and p2["half"] == "report" and p3["half"] == "tune"
    assert p1["announced_at"] == iso_ms(A) and p1["t0"] == iso_ms(A + 3 * S)
    assert (p1["detected"], p1["delay_s"], p1["before_peak"]) == (True, -63.0, True)
    assert (p1["first_alert_score"], p1["first_alert_id"], p1["pump_alerts"]) == (0.8, "p1", 2)
    assert (p1["peak_s"], p1["big"]) == (7.0, True)
    assert (p2["detected"], p2["delay_s"], p2["before_peak"]) == (True, 20.0, False)
    assert (p3["detected"], p3["delay_s"], p3["before_peak"], p3["big"]) == (False, None, None,
                                                                              False)
    assert p1["false_alerts"] == 2 and p1["after_alerts"] == 1
    assert p1["false_alerts_per_day"] == pytest.approx(2 / (2 - 60 / 86_400))
    assert (p2["false_alerts"], p2["lead_in_days"], p2["false_alerts_per_day"]) == (0, 0.0, None)
    assert p3["before_first_trade_alerts"] == 1 and p3["false_alerts"] == 0
    json.dumps(summary, allow_nan=False)  # JSON-ready


def test_goals_and_false_alerts() -> None:
    summary = _evaluate()
    assert summary["all"]["all_pumps"] == {
        "pumps": 3, "detected": 2, "recall": pytest.approx(2 / 3), "median_delay_s": -21.5,
        "before_peak": 1, "before_peak_share": pytest.approx(1 / 3),
        "before_peak_share_of_detected": 0.5}
    big = summary["all"]["big_pumps"]
    assert (big["pumps"], big["recall"], big["median_delay_s"], big["before_peak_share"]) == (
        2, 1.0, -21.5, 0.5)
    assert summary["tune"]["big_pumps"]["pumps"] == 1
    assert summary["report"]["all_pumps"]["median_delay_s"] == 20.0
    false = summary["all"]["false_alerts"]
    days = (2 - 60 / 86_400) + 0 + (1 - 60 / 86_400)
    assert false["false_alerts"] == 2 and false["after_alerts"] == 1
    assert false["lead_in_days"] == pytest.approx(days)
    assert false["per_market_day"] == pytest.approx(2 / days)
    assert false["per_48h_lead_in"] == pytest.approx(2 / 3)
    assert summary["tune"]["false_alerts"]["per_48h_lead_in"] == 1.0
    assert summary["alerts"] == {"total": 8, "pump": 3, "false": 2, "after": 1,
                                 "before_first_trade": 1, "unmatched": 1}


def _labels(size: int, positive: str = "rise") -> dict[str, dict[int, int]]:
    pumps = _pumps()
    ids = pumps["pump_id"].tolist()
    data = sort_trades(_trades(), ids)
    frame = chunk_labels(data, pump_windows(_trades(), pumps), size, positive)
    base = {"P1": A, "P2": B, "P3": C}
    out: dict[str, dict[int, int]] = {}
    for code, chunk, label in frame.itertuples(index=False):
        pump = ids[code]
        out.setdefault(pump, {})[int(chunk) - base[pump] // (size * 1000)] = int(label)
    return out


def test_chunk_labels_rise_dump_and_negatives() -> None:
    pos, neg, ign = POSITIVE, NEGATIVE, IGNORED
    assert _labels(5) == {
        "P1": {-34560: neg, -20: neg, -1: neg, 0: pos, 2: pos, 4: ign, 800: neg, 34560: neg},
        "P2": {0: pos, 1: pos, 6: ign, 8: ign, 20: ign, 720: ign, 721: neg},
        "P3": {-17280: neg, -1: neg, 0: pos, 10: ign}}
    assert _labels(25)["P1"] == {-6912: neg, -4: neg, -1: neg, 0: pos, 160: neg, 6912: neg}


def test_chunk_labels_of_the_pump_start() -> None:
    """La Morgia's positives: the chunks of the pump's first 25 s; the rest of its hour is
    ignored, the rest negative."""
    pos, neg, ign = POSITIVE, NEGATIVE, IGNORED
    start = _labels(5, "start")
    assert start["P1"] == {-34560: neg, -20: neg, -1: neg, 0: pos, 2: pos, 4: pos, 800: neg,
                           34560: neg}
    assert start["P2"] == {0: pos, 1: pos, 6: ign, 8: ign, 20: ign, 720: ign, 721: neg}
    assert start["P3"] == {-17280: neg, -1: neg, 0: pos, 10: ign}
    with pytest.raises(ValueError, match="start"):
        _labels(5, "peak")


def test_chunk_precision_recall_f1_exact() -> None:
    summary = _evaluate()
    five = summary["all"]["chunks_rise"]["5"]
    assert {k: five[k] for k in ("tp", "fp", "fn", "tn", "ignored", "unscored")} == {
        "tp": 4, "fp": 2, "fn": 1, "tn": 6, "ignored": 6, "unscored": 1}
    assert five["precision"] == pytest.approx(2 / 3)
    assert five["recall"] == pytest.approx(4 / 5)
    assert five["f1"] == pytest.approx(8 / 11)
    assert five["scores_without_trades"] == 2
    tune, report = summary["tune"]["chunks_rise"]["5"], summary["report"]["chunks_rise"]["5"]
    assert (tune["tp"], tune["fp"], tune["fn"]) == (2, 1, 1)
    assert (report["tp"], report["fp"], report["fn"]) == (2, 1, 0)
    assert report["f1"] == pytest.approx(0.8)
    unscored = summary["all"]["chunks_rise"]["15"]  # no scores: nothing predicted
    assert (unscored["tp"], unscored["precision"], unscored["recall"]) == (0, None, 0.0)
    assert prf(0, 0, 0) == {"precision": None, "recall": None, "f1": None}


def test_split_is_deterministic_and_alternates() -> None:
    pumps = _pumps()
    assert split_pumps(pumps) == (frozenset({"P1", "P3"}), frozenset({"P2"}))
    shuffled = pumps.sample(frac=1.0, random_state=3)
    assert split_pumps(shuffled) == split_pumps(pumps)


def test_the_real_split_alternates_15_15_across_the_years() -> None:
    if not DATA.is_dir():
        pytest.skip("the pump-telegram-binance dataset is not there")
    pumps = pd.read_csv(DATA / "pumps.csv")
    tune, report = split_pumps(pumps)
    assert len(tune) == len(report) == 15 and not tune & report
    assert split_pumps(pumps.iloc[::-1]) == (tune, report)
    for half in (tune, report):
        years = {p.rsplit("_", 1)[1][:4] for p in half}
        assert years == {"2020", "2021", "2022"}


def test_a_pump_without_a_trade_after_its_announcement_is_refused() -> None:
    trades = _trades()
    trades = trades[(trades["pump_id"] != "P3") | (trades["timestamp_ms"] < C)]
    with pytest.raises(SourceError, match="P3 has no trade at or after"):
        pump_windows(trades, _pumps())


def test_report_files_and_plots_agree_with_the_table(tmp_path: Path) -> None:
    summary = _evaluate()
    report = write_pump_report(tmp_path, summary, _trades(), _pumps(), ALERTS)
    for name in ("summary.json", "pumps.csv", "report.html", "timelines_tune.png",
                 "timelines_report.png", "delays.png", "chunks.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    with (tmp_path / "pumps.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["pump_id"] for r in rows] == ["P1", "P2", "P3"]
    assert rows[0]["delay_s"] == "-63.0" and rows[2]["delay_s"] == ""
    figures = {f.file: f for f in report.figures}
    for half in ("tune", "report"):
        drawn = figures[f"timelines_{half}.png"].drawn
        assert drawn["panels"] == summary[half]["pumps"]
        assert drawn["detected"] == summary[half]["all_pumps"]["detected"]
        assert drawn["pump_ids"] == [r["pump_id"] for r in summary["pumps"] if r["half"] == half]
    # alerts in [announced - 10 min, t0 + 30 min]: P1 -61 s (false) and -60 s, P2 +20 s
    assert figures["timelines_tune.png"].drawn["alerts"] == {"pump": 1, "false": 1, "after": 0}
    assert figures["timelines_report.png"].drawn["alerts"] == {"pump": 1, "false": 0, "after": 0}
    delays = figures["delays.png"].drawn
    assert delays["delays"] == summary["all"]["all_pumps"]["detected"] == 2
    assert delays["big"] == summary["all"]["big_pumps"]["detected"]
    assert delays["median_delay_s"] == summary["all"]["all_pumps"]["median_delay_s"] == -21.5
    assert "2 detected pumps (2 big); median -21.5 s" in figures["delays.png"].caption
    bars = figures["chunks.png"].drawn["bars"]
    for half in ("all", "tune", "report"):
        for size, figures_s in summary[half]["chunks"].items():
            assert bars[half][size] == {m: figures_s[m] for m in ("precision", "recall", "f1")}
    page = report.page.read_text()
    for f in report.figures:
        assert f'src="{f.file}"' in page and html.escape(f.caption) in page
    for pump in ("P1", "P2", "P3"):
        assert f"<th>{pump}</th>" in page
    assert f"<td>{8 / 11:.3f}</td>" in page


def test_the_real_dataset_is_graded_in_seconds() -> None:
    if not DATA.is_dir():
        pytest.skip("the pump-telegram-binance dataset is not there")
    trades, pumps = pd.read_parquet(DATA / "trades.parquet"), pd.read_csv(DATA / "pumps.csv")
    tune, _ = split_pumps(pumps)
    rng = np.random.default_rng(0)
    scores = rng.random(len(trades))
    chunk_scores: dict[int, dict[tuple[str, int], float]] = {}
    for size in (5, 15, 25):
        top = pd.DataFrame({"s": trades["pump_id"], "c": trades["timestamp_ms"] // (size * 1000),
                            "v": scores}).groupby(["s", "c"])["v"].max()
        keys = zip(top.index.get_level_values(0), top.index.get_level_values(1), strict=True)
        chunk_scores[size] = {(str(s), int(c)): float(v)
                              for (s, c), v in zip(keys, top.to_numpy(), strict=True)}
    start = time.perf_counter()
    summary = evaluate_pumps(trades, pumps, [], chunk_scores, 0.999, tune)
    assert time.perf_counter() - start < 5
    assert summary["all"]["pumps"] == 30 and summary["tune"]["pumps"] == 15
    assert summary["all"]["chunks"]["5"]["unscored"] == 0
    assert summary["all"]["chunks"]["5"]["scores_without_trades"] == 0
