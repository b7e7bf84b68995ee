"""The alert page's charts: what they draw is what the table beside them lists."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from consumers.ui.chart import Point, records_figure, timeline_svg
from pipeline.alert_context import Context, Sample

SVG = "{http://www.w3.org/2000/svg}"


def _pool_context(n: int = 100) -> Context:
    samples = tuple(Sample(at=1000.0 + 12 * i, offset=10 + 2 * i, item_id=f"log_{i}",
                           price=1e-5 * (1 + i / 10), liquidity=100.0 - i / 2 if i < 90 else 0.5,
                           flow_in=0.3 if i % 2 else 0.0, flow_out=0.0 if i % 2 else 0.2)
                    for i in range(n))
    return Context("a1", "pool", "chain.dex", 2, 0, 400, samples)


def test_the_records_chart_has_a_panel_per_series_and_marks_the_alert() -> None:
    ctx = _pool_context()
    svg, rows = records_figure(ctx, event_time=1000.0 + 12 * 60, offset=130)
    root = ET.fromstring(svg)
    panels = root.findall(f"{SVG}rect")
    assert len(panels) == 3  # price, liquidity, flow
    lines = root.findall(f"{SVG}polyline")
    assert [len(p.get("points", "").split()) for p in lines] == [100, 100]  # every sample
    stems = [e for e in root.findall(f"{SVG}line") if e.get("class") in ("flow-in", "flow-out")]
    assert len(stems) == 100  # one per swap: 50 buys up, 50 sells down
    mark = [e for e in root.findall(f"{SVG}line") if e.get("class") == "mark-line"]
    assert len(mark) == 1
    xs = sorted(float(p.split(",")[0]) for p in lines[0].get("points", "").split())
    assert float(mark[0].get("x1", "0")) == xs[60]  # the alert's time, on its record's x
    title = root.find(f"{SVG}title")
    desc = root.find(f"{SVG}desc")
    assert title is not None and "pool" in (title.text or "")
    assert desc is not None and "100 records" in (desc.text or "")
    assert [r.offset for r in rows] == sorted(r.offset for r in rows)
    assert len(rows) == 40 and any(r.offset == 130 for r in rows)
    assert max(abs(r.offset - 130) for r in rows) <= 40  # the nearest to the alert's record


def test_an_address_has_flows_only_and_nothing_to_draw_is_no_chart() -> None:
    flows = tuple(Sample(at=float(i), offset=i, item_id=f"0x{i}", flow_in=float(i % 3))
                  for i in range(10))
    svg, rows = records_figure(Context("a2", "address", "chain.transactions", 0, 0, 9, flows),
                               event_time=5.0, offset=5)
    root = ET.fromstring(svg)
    assert len(root.findall(f"{SVG}rect")) == 1
    assert "received" in svg and "price" not in svg
    assert len(rows) == 10
    empty = tuple(Sample(at=float(i), offset=i, item_id=f"0x{i}") for i in range(3))
    assert records_figure(Context("a3", "address", "t", 0, 0, 2, empty), 1.0, 1) == ("",
                                                                                    list(empty))


def test_text_from_the_data_is_escaped() -> None:
    svg = timeline_svg([Point(100, 0.5, "<script>x</script>", True)])
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    ET.fromstring(svg)  # well-formed
    assert re.search(r'class="mark"', svg)
