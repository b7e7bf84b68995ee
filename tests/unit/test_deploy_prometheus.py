"""deploy/prometheus: the config, the alert rules and their unit tests, checked by promtool.

promtool comes with Prometheus (Debian package ``prometheus``); ``.ci/tools.sh`` installs it.
These tests fail, not skip, when it is missing: a deployment nobody checked is not tested.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = sorted((PROMETHEUS / "rules").glob("*.rules.yml"))
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.test.yml"))


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run promtool; fail the test if it is not installed or exits non-zero."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: run .ci/tools.sh (installs Debian's prometheus package)")
    result = subprocess.run([exe, *map(str, args)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, (
        f"promtool {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def test_config_is_valid_and_loads_the_rule_files() -> None:
    out = promtool("check", "config", PROMETHEUS / "prometheus.yml").stdout
    assert f"SUCCESS: {len(RULES)} rule files found" in out


def test_rules_are_valid() -> None:
    assert RULES, "no deploy/prometheus/rules/*.rules.yml"
    promtool("check", "rules", *RULES)


def test_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, "no deploy/prometheus/tests/*.test.yml"
    promtool("test", "rules", *RULE_TESTS)


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = {name for path in RULES
              for name in re.findall(r"^\s*- alert:\s*(\w+)", path.read_text(), re.MULTILINE)}
    assert len(alerts) >= 6
    firing: set[str] = set()
    quiet: set[str] = set()
    case = re.compile(r"alertname:\s*(\w+)\s*\n\s*exp_alerts:[ \t]*(\[\])?")
    for path in RULE_TESTS:
        for name, empty in case.findall(path.read_text()):
            (quiet if empty else firing).add(name)
    assert alerts - firing == set(), "alerts with no firing case"
    assert alerts - quiet == set(), "alerts with no quiet case"
    assert (firing | quiet) - alerts == set(), "tests of alerts that do not exist"


def test_the_alerts_the_deployment_promises_exist() -> None:
    text = "\n".join(path.read_text() for path in RULES)
    for expr in ("up{", "chainwatch_consumer_lag", "chainwatch_dlq_records_total",
                 "chainwatch_checkpoint_last_success_timestamp_seconds",
                 "chainwatch_audit_head_timestamp_seconds", "chainwatch_model_drifts",
                 "chainwatch_dlq_write_failures_total"):
        assert expr in text, f"no rule on {expr}"
