"""Grade ``pump_and_dump`` alerts on announced Binance pumps: pure functions, no Kafka, no I/O.

The data is ``pump-telegram-binance``: trades (``pump_id``, ``timestamp_ms``, ``side``,
``price``, ``amount``, ``quote_volume``) from 48 h before to 48 h after each of 30 pumps a
Telegram group announced, and ``pumps.csv`` (``pump_id``, ``market``, ``announced_at`` in UTC,
minute precision). The stream key is ``pump_id``: one stream, one pump. Trades are taken as
given (identical rows included); a stream's trades are ordered by time, file order breaking
ties. Trades of a ``pump_id`` absent from ``pumps`` are ignored.

**Definitions** (the contract of :func:`evaluate_pumps`; times in ms, all bounds inclusive
unless written with a round bracket):

* *pump start* ``t0``: the first trade of the stream at or after ``announced_at``;
* *the pump's hour*: ``[t0, t0 + 3600 s]``; the *peak* is the time of the highest trade price
  in the hour (the earliest such trade on a tie); the *move* is peak price / *base* - 1, the
  base being the price of the last trade before ``announced_at`` (the first trade's price if
  there is none); a *big pump* moved >= 0.10 (:data:`BIG_MOVE`);
* an alert of the stream *belongs to the pump* when its time is in
  ``[announced_at - 60 s, t0 + 3600 s]``; the pump is *detected* when one does;
  ``delay_s`` = first such alert - ``t0`` (negative when it came before the first pump trade;
  reported as is); ``before_peak``: that first alert's time <= the peak's;
* *false alerts*: alerts in the lead-in ``[first trade of the stream, announced_at - 60 s)``;
  ``lead_in_days`` is that interval's length in days; false alerts per market-day = count /
  lead-in days (pooled over pumps: total count / total days); false alerts per 48 h lead-in =
  the mean count per pump; alerts after ``t0 + 3600 s`` are *after* alerts (the aftermath:
  neither false nor true), counted apart; alerts before the stream's first trade are counted
  as ``before_first_trade``, alerts of unknown streams as ``unmatched``;
* *goals*, over the big pumps and over all pumps: ``recall`` = detected / pumps;
  ``median_delay_s`` of the detected; ``before_peak_share`` = pumps whose first alert came at
  or before the peak / pumps (and ``before_peak_share_of_detected`` = the same / detected);
* *chunks* (La Morgia et al. 2020), for S = 5, 15, 25 s (:data:`CHUNK_SIZES_S`): chunk
  ``timestamp_ms // (S * 1000)`` of a stream, over the chunks with trades. In ``chunks`` (the
  headline, La Morgia's task: detect the pump within 25 s of its start) a chunk is
  *positive* when it overlaps the pump's start ``[t0, t0 + 25 s)`` (:data:`START_MS`); in
  ``chunks_rise`` (stricter: flag the whole rise) when it overlaps ``[t0, peak]`` (if
  peak == t0, the chunk of t0). Otherwise it is *ignored* when it overlaps the rest of the
  pump's hour (up to ``t0 + 3600 s``: the rest of the pump and the dump, neither pump start
  nor ordinary trading); otherwise *negative* (the lead-in, the minute before t0 and
  everything after the pump's hour included). A chunk
  is *predicted positive* when its max score >= the threshold; a chunk with trades but no
  score is predicted negative (counted as ``unscored``). Precision, recall and F1 are pooled
  over the chunks of the pumps of a half (None when undefined).

**Split** (:func:`split_pumps`): pumps in announcement order (then ``pump_id``), even
positions ``tune``, odd positions ``report``, so both halves span 2020-2022. Every figure is
given for ``all``, ``tune`` and ``report``; a half uses only its pumps' streams.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import SourceError

CHUNK_SIZES_S = (5, 15, 25)
BIG_MOVE = 0.10
SLACK_MS = 60_000
"""How long before ``announced_at`` an alert still belongs to the pump."""
START_MS = 25_000
"""The pump's start: the positive chunks of the headline (La Morgia) chunk figures overlap
[t0, t0 + 25 s), the horizon within which they detect."""
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
HALVES = ("all", "tune", "report")
POSITIVE, NEGATIVE, IGNORED = 1, 0, -1

PumpAlert = tuple[str, int, float, str]
"""(stream, time_ms, score, alert_id)."""

DEFINITION = (
    "t0: the stream's first trade at or after announced_at; the pump's hour: [t0, t0 + 3600 s]; "
    "peak: the time of the highest trade price in the hour; move: peak price / last price "
    "before announced_at - 1; big pump: move >= 0.10; an alert belongs to the pump when in "
    "[announced_at - 60 s, t0 + 3600 s]; delay_s: first such alert - t0 (may be negative); "
    "before_peak: that alert at or before the peak; false alerts: in [first trade, "
    "announced_at - 60 s), per pump and per market-day of lead-in; after alerts: after "
    "t0 + 3600 s, neither false nor true; chunks of S s with trades: positive when overlapping "
    "the pump's start [t0, t0 + 25 s) (La Morgia's; chunks_rise: the rise [t0, peak]), "
    "ignored when overlapping the rest of the pump's hour, else negative; predicted "
    "positive when max score >= threshold; halves: pumps in announcement order, even "
    "positions tune, odd report")


def announced_ms(pumps: pd.DataFrame) -> pd.Series:
    """``announced_at`` of each pump as epoch ms (int64), indexed like ``pumps``."""
    stamps = pd.to_datetime(pumps["announced_at"], utc=True)
    return stamps.dt.as_unit("ms").astype("int64")


def split_pumps(pumps: pd.DataFrame) -> tuple[frozenset[str], frozenset[str]]:
    """(tune, report): pumps in announcement order, even positions tune, odd report.

    >>> frame = pd.DataFrame({"pump_id": ["c", "a", "b"], "announced_at": [
    ...     "2021-01-01T00:00:00+00:00", "2020-01-01T00:00:00+00:00", "2022-01-01T00:00:00Z"]})
    >>> tune, report = split_pumps(frame)
    >>> sorted(tune), sorted(report)
    (['a', 'b'], ['c'])
    """
    order = pd.DataFrame({"at": announced_ms(pumps).to_numpy(),
                          "pump_id": pumps["pump_id"].astype(str).to_numpy()})
    ids = order.sort_values(["at", "pump_id"], kind="stable")["pump_id"].tolist()
    return frozenset(ids[0::2]), frozenset(ids[1::2])


def iso_ms(ms: int) -> str:
    """Epoch ms as an ISO 8601 UTC time with ms precision.

    >>> iso_ms(1_580_403_600_123)
    '2020-01-30T17:00:00.123+00:00'
    """
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(ms))
    return moment.isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class PumpWindow:
    """One pump's times (ms) and prices, as the module docstring defines them."""

    pump_id: str
    market: str
    announced_ms: int
    first_ms: int  # the stream's first trade
    last_ms: int
    t0_ms: int
    peak_ms: int
    peak_price: float
    base_price: float

    @property
    def move(self) -> float:
        return self.peak_price / self.base_price - 1.0

    @property
    def hour_end_ms(self) -> int:
        return self.t0_ms + HOUR_MS

    @property
    def lead_in_end_ms(self) -> int:
        return self.announced_ms - SLACK_MS

    @property
    def lead_in_days(self) -> float:
        return max(0, self.lead_in_end_ms - self.first_ms) / DAY_MS


@dataclass(frozen=True)
class _Sorted:
    """The trades of the known pumps, sorted by (pump, time): numpy columns."""

    code: np.ndarray  # index into ``ids``
    ts: np.ndarray
    price: np.ndarray
    ids: tuple[str, ...]
    starts: np.ndarray  # first row of each pump; ``starts[i + 1]`` ends pump i


def _sort_trades(trades: pd.DataFrame, ids: Sequence[str]) -> _Sorted:
    codes = pd.Categorical(trades["pump_id"].astype(str), categories=list(ids)).codes
    keep = codes >= 0
    code = np.asarray(codes[keep], dtype=np.int64)
    ts = trades["timestamp_ms"].to_numpy(dtype=np.int64)[keep]
    price = trades["price"].to_numpy(dtype=np.float64)[keep]
    order = np.lexsort((ts, code))  # stable: file order breaks ties
    code, ts, price = code[order], ts[order], price[order]
    starts = np.searchsorted(code, np.arange(len(ids) + 1))
    return _Sorted(code, ts, price, tuple(ids), starts)


def _windows(data: _Sorted, pumps: pd.DataFrame) -> dict[str, PumpWindow]:
    announced = announced_ms(pumps).to_numpy()
    markets = pumps["market"].astype(str).to_numpy()
    out: dict[str, PumpWindow] = {}
    for i, pump_id in enumerate(data.ids):
        lo, hi = int(data.starts[i]), int(data.starts[i + 1])
        ts, price = data.ts[lo:hi], data.price[lo:hi]
        at = int(announced[i])
        start = int(np.searchsorted(ts, at, side="left"))
        if start == len(ts):
            raise SourceError(f"pump {pump_id} has no trade at or after its announced_at "
                              f"{iso_ms(at)}: check trades.parquet for that pump_id")
        end = int(np.searchsorted(ts, int(ts[start]) + HOUR_MS, side="right"))
        peak = start + int(np.argmax(price[start:end]))
        base = float(price[start - 1]) if start else float(price[0])
        out[pump_id] = PumpWindow(pump_id, str(markets[i]), at, int(ts[0]), int(ts[-1]),
                                  int(ts[start]), int(ts[peak]), float(price[peak]), base)
    return out


def pump_windows(trades: pd.DataFrame, pumps: pd.DataFrame) -> dict[str, PumpWindow]:
    """Every pump of ``pumps`` with t0, peak and move from its stream's trades."""
    ids = pumps["pump_id"].astype(str).tolist()
    return _windows(_sort_trades(trades, ids), pumps)


def alert_kind(window: PumpWindow, time_ms: int) -> str:
    """``pump``, ``false``, ``after`` or ``before_first_trade`` for an alert of the stream."""
    if window.lead_in_end_ms <= time_ms <= window.hour_end_ms:
        return "pump"
    if time_ms > window.hour_end_ms:
        return "after"
    return "false" if time_ms >= window.first_ms else "before_first_trade"


def pump_row(window: PumpWindow, alerts: Sequence[PumpAlert], half: str) -> dict[str, Any]:
    """The per-pump row of the report; ``alerts`` are the alerts of this stream."""
    kinds = [alert_kind(window, a[1]) for a in alerts]
    belong = sorted((a for a, k in zip(alerts, kinds, strict=True) if k == "pump"),
                    key=lambda a: (a[1], a[3]))
    first = belong[0] if belong else None
    false = kinds.count("false")
    days = window.lead_in_days
    return {
        "pump_id": window.pump_id, "market": window.market, "half": half,
        "announced_at": iso_ms(window.announced_ms), "t0": iso_ms(window.t0_ms),
        "t0_ms": window.t0_ms, "base_price": window.base_price,
        "peak_price": window.peak_price, "move": window.move,
        "big": window.move >= BIG_MOVE, "peak_s": (window.peak_ms - window.t0_ms) / 1000,
        "detected": first is not None,
        "delay_s": (first[1] - window.t0_ms) / 1000 if first else None,
        "before_peak": first[1] <= window.peak_ms if first else None,
        "first_alert_score": float(first[2]) if first else None,
        "first_alert_id": first[3] if first else None,
        "pump_alerts": len(belong), "false_alerts": false, "lead_in_days": days,
        "false_alerts_per_day": false / days if days else None,
        "after_alerts": kinds.count("after"),
        "before_first_trade_alerts": kinds.count("before_first_trade"),
    }


def _share(num: int, den: int) -> float | None:
    return num / den if den else None


def goal_figures(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Recall, median delay of the detected and the before-peak shares of these pumps."""
    detected = [r for r in rows if r["detected"]]
    early = sum(bool(r["before_peak"]) for r in detected)
    delays = [float(r["delay_s"]) for r in detected]
    return {"pumps": len(rows), "detected": len(detected),
            "recall": _share(len(detected), len(rows)),
            "median_delay_s": statistics.median(delays) if delays else None,
            "before_peak": early, "before_peak_share": _share(early, len(rows)),
            "before_peak_share_of_detected": _share(early, len(detected))}


def false_alert_figures(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """False alerts in the lead-ins of these pumps, and the after alerts."""
    total = sum(int(r["false_alerts"]) for r in rows)
    days = sum(float(r["lead_in_days"]) for r in rows)
    return {"false_alerts": total, "lead_in_days": days,
            "per_market_day": total / days if days else None,
            "per_48h_lead_in": total / len(rows) if rows else None,
            "pumps_with_false_alerts": sum(int(r["false_alerts"]) > 0 for r in rows),
            "after_alerts": sum(int(r["after_alerts"]) for r in rows)}


def chunk_labels(data: _Sorted, windows: Mapping[str, PumpWindow], size_s: int,
                 positive: str = "start") -> pd.DataFrame:
    """One row per (pump, chunk) with trades: ``pump`` (code), ``chunk``, ``label``
    (:data:`POSITIVE`, :data:`NEGATIVE` or :data:`IGNORED`); ``positive`` is ``"start"``
    (the pump's first :data:`START_MS`, La Morgia's) or ``"rise"`` (up to the peak)."""
    width = size_s * 1000
    chunk = data.ts // width
    new = np.ones(len(chunk), dtype=bool)
    new[1:] = (np.diff(chunk) != 0) | (np.diff(data.code) != 0)
    code, chunk = data.code[new], chunk[new]
    order = [windows[i] for i in data.ids]
    t0 = np.array([w.t0_ms for w in order], dtype=np.int64)[code]
    peak = np.array([w.peak_ms for w in order], dtype=np.int64)[code]
    hour_end = t0 + HOUR_MS
    start, last = chunk * width, chunk * width + width - 1  # the chunk's first and last ms
    if positive == "start":
        end = t0 + START_MS - 1
    elif positive == "rise":
        end = peak
    else:
        raise ValueError(f"positive is 'start' or 'rise', not {positive!r}")
    rise = (start <= end) & (last >= t0)
    dump = ~rise & (start <= hour_end) & (last > end)
    label = np.where(rise, POSITIVE, np.where(dump, IGNORED, NEGATIVE))
    return pd.DataFrame({"pump": code, "chunk": chunk, "label": label})


def _chunk_key(code: np.ndarray, chunk: np.ndarray) -> np.ndarray:
    return code.astype(np.int64) * (1 << 42) + chunk.astype(np.int64)


def chunk_predictions(labels: pd.DataFrame, scores: Mapping[tuple[str, int], float],
                      ids: Sequence[str], threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
    """(predicted positive, scored) per row of ``labels``, and the scores of chunks without a
    trade (or of unknown streams)."""
    position = {pump_id: i for i, pump_id in enumerate(ids)}
    codes = np.fromiter((position.get(s, -1) for s, _ in scores), dtype=np.int64,
                        count=len(scores))
    chunks = np.fromiter((c for _, c in scores), dtype=np.int64, count=len(scores))
    values = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
    known = codes >= 0
    index = pd.Index(_chunk_key(codes[known], chunks[known]))
    found = index.get_indexer(_chunk_key(labels["pump"].to_numpy(), labels["chunk"].to_numpy()))
    scored = found >= 0
    predicted = np.zeros(len(found), dtype=bool)
    predicted[scored] = values[known][found[scored]] >= threshold
    return predicted, scored, len(scores) - int(scored.sum())


def add_chunk_scores(chunks: Mapping[int, dict[tuple[str, int], float]],
                     log: Sequence[tuple[str, int, float]]) -> None:
    """Fold a rule's score log, (stream, unix second, score) per trade, into ``chunks``:
    chunk size S -> (stream, second // S) -> the highest score of the chunk so far."""
    for size, best in chunks.items():
        for stream, second, score in log:
            key = (stream, second // size)
            if score > best.get(key, -1.0):
                best[key] = score


def prf(tp: int, fp: int, fn: int) -> dict[str, float | None]:
    """Precision, recall and F1 (None where a denominator is zero).

    >>> prf(3, 1, 2)
    {'precision': 0.75, 'recall': 0.6, 'f1': 0.6666666666666666}
    """
    precision, recall = _share(tp, tp + fp), _share(tp, tp + fn)
    return {"precision": precision, "recall": recall, "f1": _share(2 * tp, 2 * tp + fp + fn)}


def chunk_figures(labels: pd.DataFrame, predicted: np.ndarray, scored: np.ndarray,
                  codes: Collection[int]) -> dict[str, Any]:
    """Chunk counts and P/R/F1 over the chunks of the pumps whose codes are given."""
    mine = labels["pump"].isin(list(codes)).to_numpy()
    label = labels["label"].to_numpy()[mine]
    hit = predicted[mine]
    counts = {"tp": int(np.sum(hit & (label == POSITIVE))),
              "fp": int(np.sum(hit & (label == NEGATIVE))),
              "fn": int(np.sum(~hit & (label == POSITIVE))),
              "tn": int(np.sum(~hit & (label == NEGATIVE))),
              "ignored": int(np.sum(label == IGNORED)),
              "unscored": int(np.sum(~scored[mine]))}
    return counts | prf(counts["tp"], counts["fp"], counts["fn"])


def _half_of(pump_id: str, tune: Collection[str]) -> str:
    return "tune" if pump_id in tune else "report"


def evaluate_pumps(  # noqa: PLR0917 - the positional signature the CLI wiring calls
        trades: pd.DataFrame, pumps: pd.DataFrame, alerts: Sequence[PumpAlert],
        chunk_scores: Mapping[int, Mapping[tuple[str, int], float]], threshold: float,
        tune: Collection[str]) -> dict[str, Any]:
    """Every figure of the module docstring, JSON-ready.

    ``pumps`` rows: per-pump rows in announcement order; ``all`` / ``tune`` / ``report``:
    ``all_pumps`` and ``big_pumps`` goals, ``false_alerts``, ``chunks`` per S (str keys);
    ``alerts``: every alert by kind. A pump not in ``tune`` is in the report half.
    """
    ids = pumps["pump_id"].astype(str).tolist()
    data = _sort_trades(trades, ids)
    windows = _windows(data, pumps)
    by_stream: dict[str, list[PumpAlert]] = {}
    for a in alerts:
        by_stream.setdefault(a[0], []).append(a)
    ordered = sorted(ids, key=lambda p: (windows[p].announced_ms, p))
    rows = [pump_row(windows[p], by_stream.get(p, []), _half_of(p, tune)) for p in ordered]
    halves = {"all": rows, "tune": [r for r in rows if r["half"] == "tune"],
              "report": [r for r in rows if r["half"] == "report"]}
    summary: dict[str, Any] = {
        "definition": DEFINITION, "threshold": threshold, "big_move": BIG_MOVE,
        "chunk_sizes_s": list(CHUNK_SIZES_S), "trades": len(data.ts), "pumps": rows,
        "alerts": {"total": len(alerts),
                   "pump": sum(r["pump_alerts"] for r in rows),
                   "false": sum(r["false_alerts"] for r in rows),
                   "after": sum(r["after_alerts"] for r in rows),
                   "before_first_trade": sum(r["before_first_trade_alerts"] for r in rows),
                   "unmatched": sum(len(v) for k, v in by_stream.items() if k not in windows)}}
    for half, chosen in halves.items():
        summary[half] = {"pumps": len(chosen), "all_pumps": goal_figures(chosen),
                         "big_pumps": goal_figures([r for r in chosen if r["big"]]),
                         "false_alerts": false_alert_figures(chosen), "chunks": {}}
    position = {p: i for i, p in enumerate(ids)}
    for half in halves:
        summary[half]["chunks_rise"] = {}
    for size in CHUNK_SIZES_S:
        for positive, key in (("start", "chunks"), ("rise", "chunks_rise")):
            labels = chunk_labels(data, windows, size, positive)
            predicted, scored, stray = chunk_predictions(labels, chunk_scores.get(size, {}),
                                                         ids, threshold)
            for half, chosen in halves.items():
                figures = chunk_figures(labels, predicted, scored,
                                        {position[r["pump_id"]] for r in chosen})
                summary[half][key][str(size)] = figures
            summary["all"][key][str(size)]["scores_without_trades"] = stray
    return summary
