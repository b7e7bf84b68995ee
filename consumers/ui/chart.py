"""The alert page's charts, as SVG: the subject's records around the alert (price, liquidity,
flow; :func:`context_svg`) and the subject's alerts over stream time (:func:`timeline_svg`),
this alert marked on both.

Drawn server-side as inline SVG (no chart library, no script), each with a title and a
description for screen readers, and a table of the same points beside it on the page.

The records' chart stacks one panel per series the subject has on one stream-time axis:
price (pools and markets), liquidity (a pool's WETH reserve) and flow (each record's buys or
inflow up, sells or outflow down), a dashed line at the alert's event time. The alerts' chart
puts ``detected_at`` on x and the score on y (0 to 1, or up to the largest score); each alert
is a dot, the page's own a larger ring with a label.

>>> svg = timeline_svg([Point(100, 0.5, "a", False), Point(160, 0.9, "b", True)])
>>> svg.startswith("<svg") and "this alert" in svg and svg.count("<circle") == 2
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from pipeline.alert_context import Context, Sample

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 20, 16, 44
PAD = 14  # between the plot's frame and its outermost points


@dataclass(frozen=True)
class Point:
    at: int  # detected_at, unix seconds of stream time
    score: float
    label: str  # the alert's type, shown in its tooltip
    marked: bool  # the page's own alert


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def timeline_svg(points: list[Point]) -> str:
    """The chart's SVG markup (every text in it escaped)."""
    lo = min((p.at for p in points), default=0)
    hi = max((p.at for p in points), default=1)
    span = hi - lo or 1
    top = max(1.0, *(p.score for p in points)) if points else 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(at: int) -> float:
        return LEFT + PAD + (0.5 if hi == lo else (at - lo) / span) * (plot_w - 2 * PAD)

    def y(score: float) -> float:
        return TOP + plot_h - max(score, 0.0) / top * (plot_h - PAD)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
             'role="img" aria-labelledby="chart-title chart-desc" class="chart">',
             '<title id="chart-title">Alerts on this subject over stream time</title>',
             f'<desc id="chart-desc">{len(points)} alerts from {escape(stamp(lo))} to '
             f'{escape(stamp(hi))}; score on the vertical axis; this alert is the ring.</desc>',
             f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="plot"/>']
    for frac in (0.0, 0.5, 1.0):
        gy = y(frac * top)
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{gy:.1f}" y2="{gy:.1f}" '
                     'class="grid"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{gy + 4:.1f}" text-anchor="end" '
                     f'class="tick">{frac * top:.2g}</text>')
    parts.append(f'<text x="{x(lo):.1f}" y="{HEIGHT - 24}" class="tick" text-anchor='
                 f'"{"middle" if hi == lo else "start"}">{escape(stamp(lo))}</text>')
    if hi != lo:
        parts.append(f'<text x="{x(hi):.1f}" y="{HEIGHT - 24}" text-anchor="end" '
                     f'class="tick">{escape(stamp(hi))}</text>')
    parts.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle" '
                 'class="axis">detected at (stream time, UTC)</text>')
    parts.append(f'<text transform="translate(14 {TOP + plot_h / 2}) rotate(-90)" '
                 'text-anchor="middle" class="axis">score</text>')
    for p in sorted(points, key=lambda p: p.marked):  # the marked one drawn last, on top
        cx, cy = x(p.at), y(p.score)
        tip = escape(f"{p.label} at {stamp(p.at)}, score {p.score:.3f}")
        if p.marked:
            parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{TOP}" y2="{TOP + plot_h}" '
                         'class="mark-line"/>')
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="8" class="mark">'
                         f'<title>this alert: {tip}</title></circle>')
            anchor = "end" if cx > LEFT + plot_w * 0.7 else "start"
            dx = -12 if anchor == "end" else 12
            parts.append(f'<text x="{cx + dx:.1f}" y="{max(cy - 10, TOP + 12):.1f}" '
                         f'text-anchor="{anchor}" class="mark-text">this alert</text>')
        else:
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" class="dot">'
                         f'<title>{tip}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


# -- the subject's records around an alert ------------------------------------------------

PANEL_H = 120  # one panel's plot height
PANEL_GAP = 34  # between panels: the next panel's title


@dataclass(frozen=True)
class Series:
    """One panel: ``values`` (x, y) drawn as a line (``kind`` "line") or as stems from zero
    (``kind`` "stems": flow in up, flow out down, as two series on one panel)."""

    title: str
    values: list[tuple[float, float]]
    kind: str = "line"
    css: str = "line"


def _ticks(lo: float, hi: float) -> list[float]:
    return [lo] if hi == lo else [lo, (lo + hi) / 2, hi]


def context_svg(panels: list[list[Series]], marked_at: float, title: str, desc: str) -> str:
    """Panels stacked on one stream-time axis, a dashed line at ``marked_at`` (the alert)
    through all of them. Each panel is a list of series sharing its y axis."""
    xs = [x for panel in panels for s in panel for x, _ in s.values] + [marked_at]
    lo, hi = min(xs), max(xs)
    span = hi - lo or 1.0
    plot_w = WIDTH - LEFT - RIGHT
    height = TOP + len(panels) * (PANEL_H + PANEL_GAP) + BOTTOM - PANEL_GAP + 8

    def x(at: float) -> float:
        return LEFT + PAD + (0.5 if hi == lo else (at - lo) / span) * (plot_w - 2 * PAD)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
             'role="img" aria-labelledby="context-title context-desc" class="chart">',
             f'<title id="context-title">{escape(title)}</title>',
             f'<desc id="context-desc">{escape(desc)}</desc>']
    for i, panel in enumerate(panels):
        top = TOP + 14 + i * (PANEL_H + PANEL_GAP)
        parts += _panel(panel, top, x)
    bottom = TOP + 14 + len(panels) * (PANEL_H + PANEL_GAP) - PANEL_GAP
    mx = x(marked_at)
    parts.append(f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{TOP + 14}" y2="{bottom}" '
                 'class="mark-line"/>')
    anchor = "end" if mx > LEFT + plot_w * 0.7 else "start"
    parts.append(f'<text x="{mx + (-6 if anchor == "end" else 6):.1f}" y="{TOP + 26}" '
                 f'text-anchor="{anchor}" class="mark-text">this alert</text>')
    parts.append(f'<text x="{x(lo):.1f}" y="{bottom + 18}" class="tick" text-anchor="start">'
                 f'{escape(stamp(lo))}</text>')
    if hi != lo:
        parts.append(f'<text x="{x(hi):.1f}" y="{bottom + 18}" text-anchor="end" '
                     f'class="tick">{escape(stamp(hi))}</text>')
    parts.append(f'<text x="{LEFT + plot_w / 2}" y="{bottom + 36}" text-anchor="middle" '
                 'class="axis">stream time (UTC)</text>')
    parts.append("</svg>")
    return "".join(parts)


def _panel(series: list[Series], top: float, x: Callable[[float], float]) -> list[str]:
    plot_w = WIDTH - LEFT - RIGHT
    ys = [y for s in series for _, y in s.values]
    stems = any(s.kind == "stems" for s in series)
    lo, hi = (min(0.0, *ys), max(0.0, *ys)) if stems else (min(ys), max(ys))
    if hi == lo:
        lo, hi = (lo - 1, hi + 1) if stems else (lo * 0.9, hi * 1.1 or 1.0)
    span = hi - lo

    def y(v: float) -> float:
        return top + PANEL_H - 4 - (v - lo) / span * (PANEL_H - 8)

    parts = [f'<text x="{LEFT}" y="{top - 5}" class="axis">'
             f'{escape(" · ".join(s.title for s in series))}</text>',
             f'<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" class="plot"/>']
    for v in _ticks(lo, hi):
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                     'class="grid"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end" '
                     f'class="tick">{v:.3g}</text>')
    for s in series:
        if s.kind == "stems":
            zero = y(0.0)
            parts += [f'<line x1="{x(a):.1f}" x2="{x(a):.1f}" y1="{zero:.1f}" y2="{y(v):.1f}" '
                      f'class="{s.css}"/>' for a, v in s.values if v]
        elif s.values:
            points = " ".join(f"{x(a):.1f},{y(v):.1f}" for a, v in s.values)
            parts.append(f'<polyline points="{points}" class="{s.css}"/>')
            if len(s.values) <= 200:
                parts += [f'<circle cx="{x(a):.1f}" cy="{y(v):.1f}" r="2" class="{s.css}-dot"/>'
                          for a, v in s.values]
    return parts


def records_figure(ctx: Context, event_time: float, offset: int, nearest: int = 40
                   ) -> tuple[str, list[Sample]]:
    """The records' chart of ``ctx`` (the alert at ``event_time``, raised by the record at
    ``offset``; "" when the records have nothing to draw) and the ``nearest`` samples to that
    offset, in offset order, for the table beside it."""
    price_unit, flow_unit = ctx.units
    panels: list[list[Series]] = []
    price = [(s.at, s.price) for s in ctx.samples if s.price is not None]
    liquidity = [(s.at, s.liquidity) for s in ctx.samples if s.liquidity is not None]
    if price:
        panels.append([Series(f"price ({price_unit})", price)])
    if liquidity:
        panels.append([Series("liquidity (WETH reserve)", liquidity, css="line2")])
    inflow = [(s.at, s.flow_in) for s in ctx.samples if s.flow_in]
    outflow = [(s.at, -s.flow_out) for s in ctx.samples if s.flow_out]
    if inflow or outflow:
        names = {"address": ("received", "sent")}.get(ctx.kind, ("bought", "sold"))
        panels.append([Series(f"{names[0]} ({flow_unit}, up)", inflow, "stems", "flow-in"),
                       Series(f"{names[1]} (down)", outflow, "stems", "flow-out")])
    shown = sorted(sorted(ctx.samples, key=lambda s: abs(s.offset - offset))[:nearest],
                   key=lambda s: s.offset)
    if not panels:
        return "", shown
    kinds = ", ".join(p[0].title.split(" (")[0] for p in panels)
    desc = (f"{len(ctx.samples)} records of this {ctx.kind} on {ctx.topic} partition "
            f"{ctx.partition}, offsets {ctx.first_offset} to {ctx.last_offset}: {kinds} over "
            "stream time; the dashed line is this alert.")
    return context_svg(panels, event_time, f"This {ctx.kind}'s records around the alert",
                       desc), shown
