"""The pump report: ``summary.json``, ``pumps.csv``, plots (PNG) and ``report.html``.

It draws what :func:`pipeline.pump_evaluation.evaluate_pumps` graded, and only that: the
per-pump rows and figures come from its summary, the prices, volumes and alert times from the
same trades, pumps and alerts it was given. Each plot is counted from what was drawn
(:attr:`Figure.drawn`), and its caption states those counts, so a test can hold each plot to
the table beside it. ``alerts.jsonl`` is the caller's to write. matplotlib runs headless.
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from consumers.report import format_value
from pipeline.pump_evaluation import HALVES, HOUR_MS, SLACK_MS, PumpAlert, announced_ms

BEFORE_MS = 10 * 60_000
"""A timeline starts this long before ``announced_at`` ..."""
AFTER_MS = 30 * 60_000
"""... and ends this long after ``t0``."""
VOLUME_BIN_MS = 10_000
DELAY_SPAN_S = 30  # the delay histogram spans [-30, 60] s in 2 s bins
COLUMNS = 3
METRICS = ("precision", "recall", "f1")
_ALERT_COLOURS = {"pump": "tab:red", "false": "tab:orange", "after": "tab:brown"}


@dataclass(frozen=True)
class Figure:
    """One PNG, its caption, and what it shows, counted from the drawn artists."""

    file: str
    caption: str
    drawn: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PumpReport:
    """What :func:`write_pump_report` wrote."""

    page: Path
    figures: tuple[Figure, ...]


def write_pump_report(out_dir: Path, summary: Mapping[str, Any], trades: pd.DataFrame,
                      pumps: pd.DataFrame, alerts: Sequence[PumpAlert]) -> PumpReport:
    """Write summary.json, pumps.csv, the plots and report.html into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n",
                                          encoding="utf-8")
    rows: list[dict[str, Any]] = list(summary["pumps"])
    _write_csv(out_dir / "pumps.csv", rows)
    announced = dict(zip(pumps["pump_id"].astype(str), announced_ms(pumps), strict=True))
    by_pump = {str(k): np.asarray(v) for k, v in
               trades.groupby(trades["pump_id"].astype(str)).indices.items()}
    figures: list[Figure] = []
    for half in ("tune", "report"):
        chosen = [r for r in rows if r["half"] == half]
        if chosen:
            figures.append(_timelines(out_dir / f"timelines_{half}.png", half, chosen,
                                      trades=trades, by_pump=by_pump, announced=announced,
                                      alerts=alerts))
    delays = _delays(out_dir / "delays.png", summary)
    if delays is not None:
        figures.append(delays)
    figures.append(_chunk_bars(out_dir / "chunks.png", summary))
    page = out_dir / "report.html"
    page.write_text(_html(summary, rows, figures), encoding="utf-8")
    return PumpReport(page, tuple(figures))


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        names = list(rows[0]) if rows else ["pump_id"]
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)


def alert_kind_at(time_ms: int, announced: int, t0: int) -> str:
    """``false`` before ``announced - 60 s``, ``after`` past ``t0 + 1 h``, else ``pump``."""
    if time_ms < announced - SLACK_MS:
        return "false"
    return "after" if time_ms > t0 + HOUR_MS else "pump"


def _title(row: Mapping[str, Any]) -> str:
    alert = f"alert {row['delay_s']:+.1f} s" if row["detected"] else "missed"
    return f"{row['pump_id']}  move {row['move']:+.1%}  peak +{row['peak_s']:.0f} s  {alert}"


def _panel(ax: Axes, row: Mapping[str, Any], frame: pd.DataFrame, announced: int,
           times: Sequence[int]) -> dict[str, int]:
    t0 = int(row["t0_ms"])
    ts = frame["timestamp_ms"].to_numpy(dtype=np.int64)
    minutes = (ts - t0) / 60_000
    ax.plot(minutes, frame["price"].to_numpy(), color="tab:blue", linewidth=0.8,
            drawstyle="steps-post", label="price (BTC)")
    volume_ax = ax.twinx()
    first_bin = (announced - BEFORE_MS - t0) // VOLUME_BIN_MS  # bins are aligned on t0
    bins = np.floor_divide(ts - t0, VOLUME_BIN_MS) - first_bin
    volume = np.bincount(bins, weights=frame["quote_volume"].to_numpy(),
                         minlength=(AFTER_MS // VOLUME_BIN_MS) - first_bin + 1)
    edges = (first_bin + np.arange(len(volume) + 1)) * VOLUME_BIN_MS / 60_000
    volume_ax.stairs(volume, edges, fill=True, color="grey", alpha=0.35,
                     label="quote volume per 10 s (BTC)")
    volume_ax.tick_params(labelsize=6)
    ax.set_zorder(volume_ax.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.axvline((announced - t0) / 60_000, color="grey", linestyle=":", label="announced_at")
    ax.axvline(0, color="black", linestyle="--", linewidth=1, label="t0")
    peak = float(row["peak_s"]) / 60
    if peak <= AFTER_MS / 60_000:
        ax.axvline(peak, color="tab:purple", linestyle="--", linewidth=1, label="peak")
    else:
        ax.annotate("peak →", (1, 0.95), xycoords="axes fraction", ha="right", va="top",
                    fontsize=7, color="tab:purple")
    drawn = {"pump": 0, "false": 0, "after": 0}
    for t in times:
        kind = alert_kind_at(t, announced, t0)
        drawn[kind] += 1
        ax.axvline((t - t0) / 60_000, color=_ALERT_COLOURS[kind], linewidth=1.4,
                   label=f"alert ({kind})")
    ax.set_xlim((announced - BEFORE_MS - t0) / 60_000, AFTER_MS / 60_000)
    ax.set_title(_title(row), fontsize=7)
    ax.tick_params(labelsize=6)
    return drawn


def _timelines(path: Path, half: str, rows: Sequence[Mapping[str, Any]], *,
               trades: pd.DataFrame, by_pump: Mapping[str, np.ndarray],
               announced: Mapping[str, int], alerts: Sequence[PumpAlert]) -> Figure:
    grid_rows = -(-len(rows) // COLUMNS)
    fig, axes = plt.subplots(grid_rows, COLUMNS, figsize=(4.2 * COLUMNS, 2.6 * grid_rows),
                             squeeze=False)
    counts = {"pump": 0, "false": 0, "after": 0}
    legend: dict[str, Any] = {}
    for ax, row in zip(axes.flat, rows, strict=False):
        pump_id, t0 = str(row["pump_id"]), int(row["t0_ms"])
        lo, hi = announced[pump_id] - BEFORE_MS, t0 + AFTER_MS
        frame = trades.iloc[by_pump.get(pump_id, np.array([], dtype=np.int64))]
        frame = frame[(frame["timestamp_ms"] >= lo) & (frame["timestamp_ms"] <= hi)]
        times = sorted(a[1] for a in alerts if a[0] == pump_id and lo <= a[1] <= hi)
        for kind, n in _panel(ax, row, frame, announced[pump_id], times).items():
            counts[kind] += n
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    for ax in list(axes.flat)[len(rows):]:
        ax.set_visible(False)
    fig.supxlabel("minutes from t0 (the first trade at or after announced_at)", fontsize=8)
    fig.legend(list(legend.values()), list(legend), loc="upper center", ncol=len(legend),
               fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.05, right=0.95, bottom=0.06, top=0.94, wspace=0.3, hspace=0.45)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    detected = sum(bool(r["detected"]) for r in rows)
    caption = (f"{half} half: {len(rows)} pumps, one panel each, {detected} detected (first "
               f"alert's delay in the title); price and per-10-s quote volume from "
               f"announced_at - 10 min to t0 + 30 min; {sum(counts.values())} alerts drawn "
               f"({counts['pump']} belonging to the pump, {counts['false']} false)")
    return Figure(path.name, caption, {"panels": len(rows), "detected": detected,
                                       "alerts": counts, "pump_ids": [r["pump_id"] for r in rows]})


def _delays(path: Path, summary: Mapping[str, Any]) -> Figure | None:
    detected = [r for r in summary["pumps"] if r["detected"]]
    if not detected:
        return None
    # 2-second bins over [-DELAY_SPAN_S, 2 x DELAY_SPAN_S]; delays beyond sit in the end bins
    # (clipped, and named in the caption), so one early alert does not squash the rest
    low, high = -DELAY_SPAN_S, 2 * DELAY_SPAN_S
    outside = sorted(float(r["delay_s"]) for r in detected
                     if not low <= float(r["delay_s"]) <= high)
    groups = {"big pumps (move >= 0.10)": [_clip(r["delay_s"], low, high) for r in detected
                                           if r["big"]],
              "other pumps": [_clip(r["delay_s"], low, high) for r in detected if not r["big"]]}
    edges = np.arange(low, high + 2, 2).tolist()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    counts, _, _ = ax.hist(list(groups.values()), bins=edges, stacked=True, label=list(groups),
                           color=["tab:red", "tab:grey"])
    medians = {"all": summary["all"]["all_pumps"]["median_delay_s"],
               "big": summary["all"]["big_pumps"]["median_delay_s"]}
    ax.axvline(medians["all"], color="black", linestyle="--",
               label=f"median, all detected: {medians['all']:.1f} s")
    if medians["big"] is not None:
        ax.axvline(medians["big"], color="tab:red", linestyle=":",
                   label=f"median, big detected: {medians['big']:.1f} s")
    ax.set(xlabel="delay: first alert - t0 (s)", ylabel="pumps")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    stacked = np.asarray(counts, dtype=float).reshape(len(groups), -1)
    drawn = {"delays": int(stacked[-1].sum()), "big": int(stacked[0].sum()),
             "median_delay_s": medians["all"], "big_median_delay_s": medians["big"]}
    big = medians["big"]
    caption = (f"Delay of the first alert after t0, all pumps: {drawn['delays']} detected "
               f"pumps ({drawn['big']} big); median {medians['all']:.1f} s (big: "
               f"{'-' if big is None else f'{big:.1f} s'})")
    if outside:
        caption += (f"; {len(outside)} outside [{low:.0f}, {high:.0f}] s, drawn in the end "
                    f"bins: {', '.join(f'{d:.1f} s' for d in outside)}")
    return Figure(path.name, caption, drawn)


def _clip(value: Any, low: float, high: float) -> float:
    return min(max(float(value), low), high)


def _chunk_bars(path: Path, summary: Mapping[str, Any]) -> Figure:
    fig, axes = plt.subplots(1, len(HALVES), figsize=(4 * len(HALVES), 3.6), sharey=True)
    heights: dict[str, dict[str, dict[str, float | None]]] = {}
    sizes = list(summary["all"]["chunks"])
    width = 0.8 / len(METRICS)
    for ax, half in zip(axes, HALVES, strict=True):
        heights[half] = {}
        for j, metric in enumerate(METRICS):
            values = [summary[half]["chunks"][s][metric] for s in sizes]
            bars = ax.bar(np.arange(len(sizes)) + (j - 1) * width,
                          [0.0 if v is None else v for v in values], width, label=metric)
            for bar, value in zip(bars, values, strict=True):
                ax.annotate("-" if value is None else f"{value:.3f}",
                            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=6, rotation=90)
            for s, value in zip(sizes, values, strict=True):
                heights[half].setdefault(s, {})[metric] = value
        ax.set_xticks(np.arange(len(sizes)), [f"{s} s" for s in sizes])
        ax.set(title=f"{half} ({summary[half]['pumps']} pumps)", ylim=(0, 1.15),
               xlabel="chunk size")
    axes[0].set_ylabel("chunk-level score")
    handles, labels = axes[0].get_legend_handles_labels()  # above the panels: off the bars
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    caption = (f"La Morgia chunk-level precision, recall and F1 at threshold "
               f"{summary['threshold']}, per half, positives the chunks overlapping the pump's "
               "first 25 s (values as in the table)")
    return Figure(path.name, caption, {"bars": heights})


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr><th>" + html.escape(format_value(r[0])) + "</th>"
                   + "".join(f"<td>{html.escape(format_value(v))}</td>" for v in r[1:]) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


_GOALS = (("pumps", "pumps"), ("detected", "detected"), ("recall", "recall"),
          ("median_delay_s", "median delay of detected (s)"),
          ("before_peak", "first alert at or before the peak"),
          ("before_peak_share", "... share of pumps"),
          ("before_peak_share_of_detected", "... share of detected"))
_FALSE = (("false_alerts", "false alerts (lead-ins)"), ("lead_in_days", "lead-in market-days"),
          ("per_market_day", "false alerts per market-day"),
          ("per_48h_lead_in", "false alerts per 48 h lead-in (mean per pump)"),
          ("pumps_with_false_alerts", "pumps with a false alert"),
          ("after_alerts", "after alerts (past t0 + 1 h; not graded)"))
_CHUNK_COUNTS = ("tp", "fp", "fn", "tn", "ignored", "unscored")
_ROW_COLUMNS = ("pump_id", "market", "half", "announced_at", "t0", "move", "big", "peak_s",
                "detected", "delay_s", "before_peak", "first_alert_score", "pump_alerts",
                "false_alerts", "lead_in_days", "false_alerts_per_day", "after_alerts")


def _figure(figures: Sequence[Figure], name: str) -> str:
    return "".join(f'<figure><img src="{html.escape(f.file)}" alt="{html.escape(f.caption)}">'
                   f"<figcaption>{html.escape(f.caption)}</figcaption></figure>"
                   for f in figures if f.file == name or (name == "timelines"
                                                          and f.file.startswith("timelines_")))


def _html(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
          figures: Sequence[Figure]) -> str:
    goals = "".join(
        f"<h3>{html.escape(title)}</h3>" + _table(["", *HALVES], [
            [label, *(summary[h][group][key] for h in HALVES)] for key, label in _GOALS])
        for group, title in (("big_pumps", "Big pumps (move >= 0.10)"),
                             ("all_pumps", "All pumps")))
    false = _table(["", *HALVES], [[label, *(summary[h]["false_alerts"][key] for h in HALVES)]
                                   for key, label in _FALSE])
    chunks, rise = (_table(["half", "S (s)", *METRICS, *_CHUNK_COUNTS], [
        [h, s, *(c[k] for k in (*METRICS, *_CHUNK_COUNTS))]
        for h in HALVES for s, c in summary[h].get(key, {}).items()])
        for key in ("chunks", "chunks_rise"))
    alerts = _table(["alerts", "count"], list(summary["alerts"].items()))
    per_pump = _table(list(_ROW_COLUMNS), [[r[k] for k in _ROW_COLUMNS] for r in rows])
    definition = html.escape(str(summary["definition"]))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pump_and_dump on announced pumps</title>
<style>body{{font-family:system-ui,sans-serif;max-width:80rem;margin:2rem auto;color:#222}}
table{{border-collapse:collapse;font-size:.85rem}}td,th{{border:1px solid #ccc;padding:.2rem .5rem;
text-align:right}}.side{{display:flex;gap:1.5rem;align-items:flex-start;flex-wrap:wrap}}
figure{{margin:1rem 0}}img{{max-width:40rem}}.wide img{{max-width:100%}}</style></head>
<body><h1>pump_and_dump on announced pumps</h1>
<p>Threshold {html.escape(format_value(summary["threshold"]))}; {summary["all"]["pumps"]} pumps
({summary["tune"]["pumps"]} tune, {summary["report"]["pumps"]} report);
{summary["trades"]} trades. Definitions: {definition}.</p>
<h2>Detection</h2><div class="side"><div>{goals}</div>{_figure(figures, "delays.png")}</div>
<h2>False alerts</h2><div class="side">{false}{alerts}</div>
<h2>Chunks (La Morgia et al. 2020)</h2>
<p>Positive: the chunks overlapping the pump's first 25 s (the plot).</p>
<div class="side">{chunks}{_figure(figures, "chunks.png")}</div>
<h3>Stricter: every chunk of the rise to the peak positive</h3>{rise}
<h2>Pumps</h2>{per_pump}
<h2>Timelines</h2><div class="wide">{_figure(figures, "timelines")}</div>
<p>Every figure in <a href="summary.json">summary.json</a>; the rows in
<a href="pumps.csv">pumps.csv</a>.</p></body></html>
"""
