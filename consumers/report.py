"""The evaluation report: ``summary.json``, plots (PNG) and a short ``report.html``.

Everything here takes plain data (no Kafka, no models), so the evaluator decides what to
show and this module only draws it. matplotlib runs headless (the Agg backend).
"""

from __future__ import annotations

import html
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from pipeline.alerts import Alert
from pipeline.evaluation import roc_auc
from pipeline.risk_evaluation import BLOCKS_PER_HOUR, roc_points


@dataclass
class Timeline:
    """Price and liquidity of one pool around one campaign, with the alerts raised on it."""

    title: str
    blocks: list[int] = field(default_factory=list)
    prices: list[float] = field(default_factory=list)
    liquidity: list[float] = field(default_factory=list)
    alerts: list[tuple[int, str]] = field(default_factory=list)  # (block, alert type)
    phases: dict[str, int] = field(default_factory=dict)
    price_label: str = "price (WETH)"


@dataclass
class RiskReport:
    """What the rug-risk plots show, all from one half of the pools (``half``): the (score,
    label) pairs of each ROC curve (named ``age 1h`` … for the pool ages, anything else
    for before the event), the lead times of the pools alerted ahead of their event
    and the pool timelines. The table beside them reads ``summary[rule][half]``."""

    rule: str
    half: str
    roc: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    lead_blocks: list[int] = field(default_factory=list)
    timelines: list[Timeline] = field(default_factory=list)


def pr_curve(scored: list[tuple[float, int]]) -> list[tuple[float, float]]:
    """(recall, precision) at every score threshold, from (score, is_positive) pairs."""
    positives = sum(label for _, label in scored)
    if not positives:
        return []
    points, tp, fp = [], 0, 0
    for _, label in sorted(scored, key=lambda p: -p[0]):
        tp += label
        fp += 1 - label
        points.append((tp / positives, tp / (tp + fp)))
    return points


def campaign_pr_curve(scored: list[tuple[float, str | None]],
                      campaigns: int) -> list[tuple[float, float]]:
    """(recall, precision) at every score threshold of a type's alerts, from (score, the
    campaign it matched or None): precision over the alerts at or above the threshold, recall
    over the campaigns (those with a matched alert at or above it), as the summary table
    counts them, so the curve's last point is the table's precision and recall.

    >>> campaign_pr_curve([(0.9, "a"), (0.8, None), (0.7, "a"), (0.6, "b")], 4)
    [(0.25, 1.0), (0.25, 0.5), (0.25, 0.6666666666666666), (0.5, 0.75)]
    """
    if not campaigns:
        return []
    points: list[tuple[float, float]] = []
    seen: set[str] = set()
    true = 0
    for n, (_, campaign) in enumerate(sorted(scored, key=lambda p: -p[0]), start=1):
        if campaign is not None:
            true += 1
            seen.add(campaign)
        points.append((len(seen) / campaigns, true / n))
    return points


def write_report(directory: Path, title: str, summary: dict[str, Any], *,
                 alerts: list[Alert] | None = None,
                 scored: dict[str, list[tuple[float, int]]] | None = None,
                 campaign_scored: dict[str, tuple[list[tuple[float, str | None]], int]]
                 | None = None,
                 delays: dict[str, list[int]] | None = None,
                 hits: list[dict[str, Any]] | None = None,
                 event_delays: dict[str, list[int]] | None = None,
                 timelines: list[Timeline] | None = None,
                 risk: RiskReport | None = None) -> Path:
    """Write the report; returns the path of report.html. ``alerts`` (every alert graded) go
    to ``alerts.jsonl``, one alert's wire JSON a line in stream order, for anyone to
    re-grade. ``scored``: (score, label) pairs per model, for precision-recall over labels;
    ``campaign_scored``: per alert type, (score, matched campaign) of its alerts and its
    campaign count, for precision-recall as the summary counts it (:func:`campaign_pr_curve`);
    ``delays``: per type, each detected campaign's delay from the type's reference phase (as
    the table's median); ``hits``: the per-campaign hit list, shown as a table;
    ``event_delays``: per alert type, each detected event's first alert block - the event's
    block (replayed data, :func:`~pipeline.evaluation.evaluate_events`)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    ordered = sorted(alerts or [], key=lambda a: (a.event_time, a.alert_id))
    (directory / "alerts.jsonl").write_bytes(b"".join(a.to_json() + b"\n" for a in ordered))
    figures: list[tuple[str, str]] = []
    curves = {name: pr_curve(pairs) for name, pairs in (scored or {}).items()}
    curves |= {name: campaign_pr_curve(pairs, n) for name, (pairs, n)
               in (campaign_scored or {}).items()}
    if any(curves.values()):
        figures.append(("precision_recall.png", "Precision-recall by detector (recall over "
                        "campaigns for alert types; the dot: the table's operating point)"))
        _plot_pr(directory / figures[-1][0], curves)
    labelled = {name: pairs for name, pairs in (scored or {}).items() if roc_points(pairs)}
    if labelled:
        figures.append(("roc.png", "ROC of " + ", ".join(labelled) + " (the AUC as in the "
                        "table)"))
        _plot_roc(directory / figures[-1][0], labelled, "ROC of " + ", ".join(labelled))
    for kind, values in sorted((event_delays or {}).items()):
        if values:
            figures.append((f"{kind}_delay.png", f"{kind}: first alert - event block for each "
                            f"of the {len(values)} detected events, median "
                            f"{statistics.median(values):g} (as in the table)"))
            _plot_event_delays(directory / figures[-1][0], kind, values)
    if delays and any(delays.values()):
        figures.append(("detection_delay.png", "Detection delay of each detected campaign, "
                        "in blocks from its type's reference phase (as in the table)"))
        _plot_delays(directory / figures[-1][0], delays)
    for i, timeline in enumerate(timelines or []):
        figures.append((f"timeline_{i + 1}.png", timeline.title))
        _plot_timeline(directory / figures[-1][0], timeline)
    risk_figures: list[tuple[str, str]] = []
    if risk is not None:
        risk_figures = _risk_figures(directory, risk)
    page = directory / "report.html"
    page.write_text(_html(title, summary, figures, risk=risk, risk_figures=risk_figures,
                          hits=hits or []), encoding="utf-8")
    return page


LEAD_BANDS = {"< 1 h": (0.0, 1.0), "1-6 h": (1.0, 6.0), "6-24 h": (6.0, 24.0),
              "1-7 days": (24.0, 168.0), "> 7 days": (168.0, math.inf)}
"""The lead-time plot's bars, in hours: the table's 1 h / 6 h / 24 h marks are their edges."""


def _risk_figures(directory: Path, risk: RiskReport) -> list[tuple[str, str]]:
    figures: list[tuple[str, str]] = []
    name = risk.rule
    if risk.lead_blocks:
        hours = [b / BLOCKS_PER_HOUR for b in risk.lead_blocks]
        ahead = ", ".join(f"{sum(h >= limit for h in hours)} at least {limit} h ahead"
                          for limit in (1, 6, 24))
        figures.append((f"{name}_lead_time.png",
                        f"{name}: time from the first alert to the event, {len(hours)} "
                        f"pools alerted at or before it, {ahead} ({risk.half} half)"))
        counts = [sum(lo <= h < hi for h in hours) for lo, hi in LEAD_BANDS.values()]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.bar(list(LEAD_BANDS), counts)
        for i, n in enumerate(counts):
            ax.annotate(str(n), (i, n), ha="center", va="bottom", fontsize=8)
        ax.set(xlabel="time from the first alert to the event", ylabel="pools",
               title=f"{name}: lead time, {risk.half} half")
        fig.tight_layout()
        fig.savefig(directory / figures[-1][0], dpi=110)
        plt.close(fig)
    for group, prefix in (("age", "by_age"), ("before", "before_event")):
        curves = {k: v for k, v in risk.roc.items() if k.startswith("age ") == (group == "age")}
        drawn = {k: v for k, v in curves.items() if roc_points(v)}
        if not drawn:
            continue
        what = "by pool age" if group == "age" else "before the event"
        figures.append((f"{name}_roc_{prefix}.png", f"{name}: ROC {what} ({risk.half} half)"))
        _plot_roc(directory / figures[-1][0], drawn, f"{name}: ROC {what}, {risk.half} half")
    for i, timeline in enumerate(risk.timelines):
        figures.append((f"{name}_timeline_{i + 1}.png", timeline.title))
        _plot_timeline(directory / figures[-1][0], timeline)
    return figures


def _plot_roc(path: Path, curves: dict[str, list[tuple[float, int]]], title: str) -> None:
    """ROC curves of (score, label) pairs, each labelled with its AUC and class counts."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for label, pairs in curves.items():
        points = roc_points(pairs)
        auc = roc_auc(pairs)
        positives = sum(y for _, y in pairs)
        ax.plot([x for x, _ in points], [y for _, y in points], drawstyle="steps-post",
                label=f"{label}: AUC {format_value(auc)} ({positives}+ / "
                      f"{len(pairs) - positives}-)")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", xlim=(0, 1),
           ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_event_delays(path: Path, kind: str, values: list[int]) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    low, high = min(values), max(values)
    edges = [x - 0.5 for x in range(low, high + 2)] if high - low <= 60 else 40
    ax.hist(values, bins=edges, color="tab:red")
    ax.axvline(statistics.median(values), color="black", linestyle="--",
               label=f"median {statistics.median(values):g}")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="blocks from the event to the first alert (< 0: before it)",
           ylabel="events", title=f"{kind}: delay per detected event")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_pr(path: Path, curves: dict[str, list[tuple[float, float]]]) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, points in sorted(curves.items()):
        if points:
            line, = ax.plot([r for r, _ in points], [p for _, p in points], label=name)
            ax.plot(*points[-1], "o", color=line.get_color())  # every alert: the table's
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.05),
           title="Precision-recall as the score threshold falls")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_delays(path: Path, delays: dict[str, list[int]]) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    shown = {k: v for k, v in sorted(delays.items()) if v}
    low = min(min(v) for v in shown.values())
    high = max(max(v) for v in shown.values())
    edges = [x - 0.5 for x in range(low, high + 2)]  # one bar per block
    ax.hist(list(shown.values()), bins=edges, label=[
        f"{k} (median {statistics.median(v):g})" for k, v in shown.items()], stacked=True)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="blocks from the type's reference phase to the first alert",
           ylabel="campaigns", title="Detection delay per detected campaign")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_timeline(path: Path, t: Timeline) -> None:
    fig, (price_ax, liq_ax) = plt.subplots(2, 1, sharex=True, figsize=(7, 5))
    price_ax.plot(t.blocks, t.prices, color="tab:blue", drawstyle="steps-post")
    price_ax.set_ylabel(t.price_label)
    liq_ax.plot(t.blocks, t.liquidity, color="tab:green", drawstyle="steps-post")
    liq_ax.set(ylabel="liquidity (WETH)", xlabel="block")
    liq_ax.ticklabel_format(axis="x", useOffset=False, style="plain")
    liq_ax.xaxis.set_major_locator(MaxNLocator(5))
    for ax in (price_ax, liq_ax):
        for name, block in t.phases.items():
            ax.axvline(block, color="grey", linestyle=":", linewidth=1)
            if ax is price_ax:
                ax.annotate(name, (block, 1), xycoords=("data", "axes fraction"),
                            fontsize=8, color="grey", va="top")
        for block, kind in t.alerts:
            ax.axvline(block, color=_ALERT_COLOURS.get(kind, "tab:red"), linewidth=1.2,
                       alpha=0.8, label=kind if ax is price_ax else None)
    handles, labels = price_ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        price_ax.legend(unique.values(), [f"alert: {k}" for k in unique], fontsize=8)
    price_ax.set_title(t.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


_ALERT_COLOURS = {"rug_risk": "tab:orange"}


def _figure_html(figures: list[tuple[str, str]]) -> str:
    return "".join(f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
                   f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                   for name, caption in figures)


_RISK_AUC_COLUMNS = ("roc_auc", "pr_auc", "positives", "negatives")
_RISK_SHARES = (
    ("event_pools", "event pools"),
    ("lived_1h_pools", "event pools that lived >= 1 h"),
    ("lived_1h_flagged_1h_ahead_share", "… of them flagged >= 1 h ahead"),
    ("lived_6h_pools", "event pools that lived >= 6 h"),
    ("lived_6h_flagged_6h_ahead_share", "… of them flagged >= 6 h ahead"),
    ("flagged_1h_ahead_share", "event pools flagged >= 1 h ahead"),
    ("flagged_6h_ahead_share", "event pools flagged >= 6 h ahead"),
    ("flagged_24h_ahead_share", "event pools flagged >= 24 h ahead"),
    ("fast_pools", "fast event pools (event < 1 h after the first reserves)"),
    ("fast_flagged_before_event_share", "… of them flagged before the event"),
    ("never_event_pools", "never-event pools"),
    ("never_event_flagged_share", "… of them ever flagged"),
    ("healthy_pools", "healthy-token pools (all, WETH side or not)"),
    ("healthy_flagged_share", "… of them ever flagged"),
)


def _risk_html(summary: dict[str, Any], risk: RiskReport,
               figures: list[tuple[str, str]]) -> str:
    section = summary.get(risk.rule)
    if not isinstance(section, dict) or risk.half not in section:
        return ""
    part = section[risk.half]
    rows = []
    for group, label in (("by_age", "at pool age"), ("before_event", "before the event")):
        for horizon, metrics in part[group].items():
            cells = "".join(f"<td>{format_value(metrics.get(k))}</td>" for k in _RISK_AUC_COLUMNS)
            rows.append(f"<tr><th>{label} {html.escape(horizon)}</th>{cells}</tr>")
    auc_table = ("<table><tr><th>horizon</th>"
                 + "".join(f"<th>{c}</th>" for c in _RISK_AUC_COLUMNS) + "</tr>"
                 + "".join(rows) + "</table>")
    halves = [h for h in ("tune", "report", "all") if h in section]
    share_rows = "".join(
        f"<tr><th>{html.escape(label)}</th>"
        + "".join(f"<td>{format_value(section[h]['alerts'].get(key))}</td>" for h in halves)
        + "</tr>" for key, label in _RISK_SHARES)
    leads = part["alerts"].get("lead_blocks", [])
    share_rows += ("<tr><th>alerted at or before the event (lead-time histogram)</th>"
                   + "".join(f"<td>{len(section[h]['alerts'].get('lead_blocks', []))}</td>"
                             for h in halves) + "</tr>")
    median = statistics.median(leads) / BLOCKS_PER_HOUR if leads else None
    share_table = ("<table><tr><th>first alert per pool</th>"
                   + "".join(f"<th>{h}</th>" for h in halves) + "</tr>" + share_rows
                   + "</table>")
    name = html.escape(risk.rule)
    return (f"<h2>{name}</h2><p>{html.escape(str(section.get('definition', '')))}</p>"
            f"<p>ROC-AUC and PR-AUC, {html.escape(risk.half)} half (the curves below):</p>"
            f"{auc_table}<p>Alerts ({html.escape(risk.half)} half in the plots; median "
            f"lead {format_value(median)} h):</p>{share_table}{_figure_html(figures)}")


def _hits_html(hits: list[dict[str, Any]]) -> str:
    """The per-campaign hit list as a table."""
    if not hits:
        return ""
    columns = ("campaign_id", "type", "subject", "start_block", "end_block", "detected",
               "alerts", "delay_from_start", "delay_from_onset", "delay_vs_move")
    head = "".join(f"<th>{c}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(format_value(h.get(c)))}</td>"
                                    for c in columns) + "</tr>" for h in hits)
    return f"<h2>Campaigns</h2><table><tr>{head}</tr>{body}</table>"


def _html(title: str, summary: dict[str, Any], figures: list[tuple[str, str]], *,
          risk: RiskReport | None = None,
          risk_figures: list[tuple[str, str]] | None = None,
          hits: list[dict[str, Any]] | None = None) -> str:
    rows = []
    for name, metrics in sorted(summary.get("by_type", {}).items()):
        cells = "".join(f"<td>{format_value(metrics.get(k))}</td>" for k in _COLUMNS)
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    table = ("<table><tr><th>type</th>" + "".join(f"<th>{c}</th>" for c in _COLUMNS)
             + "</tr>" + "".join(rows) + "</table>") if rows else ""
    notes = "".join(f"<li>{html.escape(str(k))}: {html.escape(format_value(v))}</li>"
                    for k, v in sorted(summary.items()) if not isinstance(v, (dict, list)))
    images = _figure_html(figures)
    risk_part = _risk_html(summary, risk, risk_figures or []) if risk is not None else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}}
figure{{display:inline-block;margin:1rem}}img{{max-width:28rem}}</style></head>
<body><h1>{html.escape(title)}</h1>{table}<ul>{notes}</ul>{images}{risk_part}
{_hits_html(hits or [])}
<p>Full figures in <a href="summary.json">summary.json</a>.</p></body></html>
"""


_COLUMNS = ("precision", "recall", "f1", "median_delay_blocks", "delay_reference",
            "false_per_10k", "alerts", "campaigns")


def format_value(value: Any) -> str:
    """A table cell: '-' for None, floats to three decimals."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
