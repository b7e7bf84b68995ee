"""The alert page's chart: the subject's alerts over stream time, this one marked, as SVG.

Drawn server-side as inline SVG (no chart library, no script): x is ``detected_at`` (stream
time), y the alert's score (0 to 1, or up to the largest score); each alert is a dot, the
page's own alert a larger ring with a label. The SVG has a title and a description for
screen readers; the same points are in the page's table of the subject's alerts.

>>> svg = timeline_svg([Point(100, 0.5, "a", False), Point(160, 0.9, "b", True)])
>>> svg.startswith("<svg") and "this alert" in svg and svg.count("<circle") == 2
True
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

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
