"""Every ``chainwatch_*`` name that deploy/ queries is one the code exports.

The exported names come from prometheus_client's registry after importing pipeline.metrics:
a counter ``x`` is scraped as ``x_total`` (and ``x_created``), a histogram as ``x_bucket``,
``x_sum`` and ``x_count``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import pipeline.metrics  # noqa: F401  (registers the metrics)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NAME = re.compile(r"\bchainwatch_[a-zA-Z0-9_]+")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "info": ("_info",),
    "stateset": ("",),
    "gauge": ("",),
    "unknown": ("",),
}


def exported_names() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def dashboard_names() -> set[str]:
    data = json.loads((DEPLOY / "grafana" / "dashboards" / "chainwatch.json").read_text())
    exprs = [t["expr"] for p in data["panels"] for t in p.get("targets", [])]
    return {name for expr in exprs for name in NAME.findall(expr)}


def yaml_names(paths: list[Path]) -> set[str]:
    # Rule and rule-test files mention chainwatch_* only as metric names (in expressions,
    # input series and comments); everything else is chainwatch-… or chainwatch.…
    return {name for path in paths for name in NAME.findall(path.read_text())}


def test_registry_reading_knows_the_suffixes() -> None:
    names = exported_names()
    assert "chainwatch_records_consumed_total" in names
    assert "chainwatch_scoring_latency_seconds_bucket" in names
    assert "chainwatch_model_drifts" in names


def used_names(source: str) -> set[str]:
    prometheus = DEPLOY / "prometheus"
    if source == "dashboard":
        return dashboard_names()
    folder = {"rules": prometheus / "rules", "rule tests": prometheus / "tests"}[source]
    return yaml_names(sorted(folder.glob("*.yml")))


@pytest.mark.parametrize("source", ["dashboard", "rules", "rule tests"])
def test_names_used_in_deploy_are_exported(source: str) -> None:
    used = used_names(source)
    assert used, f"no chainwatch_* names found in the {source}"
    missing = sorted(used - exported_names())
    assert not missing, (
        f"the {source} use metrics that pipeline.metrics does not export: {missing}")
