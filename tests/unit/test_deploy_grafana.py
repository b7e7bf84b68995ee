"""deploy/grafana: provisioning files and the dashboard, whose PromQL promtool parses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "chainwatch.json"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDER = GRAFANA / "provisioning" / "dashboards" / "chainwatch.yml"
# Grafana's interval variables, replaced by a duration before promtool parses a query
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query."""
    return [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]


def test_provisioning_points_at_the_mounted_dashboards() -> None:
    compose = (ROOT / "deploy" / "docker-compose.yml").read_text()
    path = re.search(r"^\s*path:\s*(\S+)", PROVIDER.read_text(), re.MULTILINE)
    assert path is not None
    assert f"./grafana/dashboards:{path.group(1)}:ro" in compose
    assert f"{path.group(1)}/{DASHBOARD.name}" in compose  # the home dashboard


def test_every_panel_uses_the_provisioned_datasource() -> None:
    uid = re.search(r"^\s*uid:\s*(\S+)", DATASOURCE.read_text(), re.MULTILINE)
    assert uid is not None
    assert "url: http://prometheus:9090" in DATASOURCE.read_text()
    for panel in panels():
        assert panel["datasource"]["uid"] == uid.group(1), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid.group(1), panel["title"]


def test_layout_ids_unique_and_panels_do_not_overlap() -> None:
    data = dashboard()
    assert data["uid"] and data["title"]
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in data["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_the_promised_panels_are_there() -> None:
    text = "\n".join(expr for _, expr in queries())
    for needle in ("chainwatch_records_consumed_total", "chainwatch_consumer_lag",
                   "histogram_quantile(0.99, sum by (le) (rate(chainwatch_scoring_latency_seconds",
                   "chainwatch_alerts_total", "chainwatch_dlq_records_total",
                   "chainwatch_checkpoint_last_success_timestamp_seconds",
                   "chainwatch_audit_log_size", "chainwatch_audit_head_timestamp_seconds",
                   "chainwatch_model_drifts"):
        assert needle in text, f"no panel queries {needle}"


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: run .ci/tools.sh (installs Debian's prometheus package)")
    rules = []
    for i, (title, query) in enumerate(queries()):
        expr = query
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{title}: unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    # JSON is YAML: one recording rule per query, so that promtool parses each of them
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([exe, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
