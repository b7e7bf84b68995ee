"""The README's own detector, run as a user would: a module in a folder of theirs, named only
in a settings file, through ``chainwatch detectors list``, ``chainwatch score`` and
``chainwatch demo``; and a built-in disabled in the same file raises nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from pipeline.alerts import Alert
from pipeline.features.catalog import markdown
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import CHAINWATCH, cli_env
from tests.helpers import produce_chain, read_alerts

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
DISABLE_WASH = "\n[detectors.wash_trading]\nenabled = false\n"


def _block(language: str, first_line: str, containing: str = "") -> str:
    """The README's fenced ``language`` block that starts with ``first_line``."""
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", README.read_text(), re.S):
        if lang == language and body.startswith(first_line) and containing in body:
            return str(body)
    raise AssertionError(f"README.md has no {language} block starting {first_line!r}")


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """A folder outside the repository with the README's mydetectors.py and chainwatch.toml."""
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "mydetectors.py").write_text(_block("python", "# mydetectors.py"))
    (folder / "chainwatch.toml").write_text(
        _block("toml", "# chainwatch.toml", "[detectors.value_spike]"))
    return folder


def _env(folder: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(base or os.environ)
    env["PYTHONPATH"] = str(folder)
    return env


def _run(folder: Path, *args: str, env: dict[str, str] | None = None,
         timeout: float = 300) -> str:
    done = subprocess.run([CHAINWATCH, *args], cwd=folder, env=_env(folder, env),
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_readme_detector_is_listed(user_folder: Path) -> None:
    listed = [json.loads(line) for line in _run(
        user_folder, "detectors", "list", "--json", "--config", "chainwatch.toml").splitlines()]
    by_name = {rule["name"]: rule for rule in listed}
    assert {"anomalous_transfer", "pump_and_dump", "rug_pull", "wash_trading",
            "value_spike"} <= set(by_name)
    spike = by_name["value_spike"]
    assert (spike["class"], spike["on"], spike["version"], spike["threshold"]) == (
        "mydetectors:ValueSpike", "transactions", "1", 1.0)
    assert spike["params"] == {"sigmas": 3.0, "warmup": 500}
    assert spike["cooldown_blocks"] == 50
    text = _run(user_folder, "detectors", "list", "--config", "chainwatch.toml")
    assert "value_spike  on transactions  mydetectors:ValueSpike" in text


def test_the_readme_detector_alerts_in_score(
        user_folder: Path, settings: Settings,
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    ensure_topics(settings)
    produce_chain(settings, seed=11, blocks=range(400))
    _run(user_folder, "score", "--until-caught-up", "--json", "--config", "chainwatch.toml",
         "--session-timeout", "2", env=cli_env(settings))  # a join in 1 s, not 5
    alerts = [Alert.from_json(next(iter(encodings)))
              for encodings in read_alerts(consumer_factory(settings.topics.alerts)).values()]
    types = Counter(alert.type for alert in alerts)
    assert types["value_spike"] > 0, types
    assert types["wash_trading"] > 0, types  # still on: only the demo below disables it
    spike = next(alert for alert in alerts if alert.type == "value_spike")
    assert (spike.detector, spike.model_version) == ("value_spike", "1")
    assert spike.evidence["params"] == {"sigmas": 3.0, "warmup": 500}
    assert spike.evidence["threshold"] == 1.0 and "log_value" in spike.evidence


def test_the_readme_detector_alerts_in_the_demo_and_a_disabled_builtin_does_not(
        user_folder: Path) -> None:
    config = user_folder / "chainwatch.toml"
    config.write_text(config.read_text() + DISABLE_WASH)
    summary = json.loads(_run(user_folder, "demo", "--json", "--seed", "4242",
                              "--config", "chainwatch.toml"))
    alerts = summary["alerts_by_type"]
    assert alerts.get("value_spike", 0) > 0, alerts
    assert "wash_trading" not in alerts, alerts  # the seed's wash ring raises one when on
    assert alerts.get("pump_and_dump", 0) > 0 and alerts.get("rug_pull", 0) > 0


def test_the_readme_documents_every_feature_a_detector_receives() -> None:
    text = README.read_text()
    for kind in ("transactions", "dex"):
        assert markdown(kind).strip() in text, f"README's {kind} feature table is stale: " \
            "paste pipeline.features.catalog.markdown(kind)"


@pytest.mark.parametrize("command", [["detectors", "list"], ["score", "--bootstrap",
                                                           "127.0.0.1:9"]])
def test_a_detector_that_does_not_import_is_one_line_before_any_work(
        tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[detectors.gone]\nclass = "nosuchmodule:Detector"\non = "dex"\n'
                      "threshold = 0.5\n")
    done = subprocess.run([CHAINWATCH, *command, "--config", str(config)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].endswith("detectors.gone: cannot import nosuchmodule:Detector: "
                              "ModuleNotFoundError: No module named 'nosuchmodule'; check the "
                              "module is importable (on PYTHONPATH or installed)"), lines
    assert "Traceback" not in done.stderr and not (tmp_path / "chainwatch-data").exists()


def test_the_demo_and_evaluate_refuse_a_bad_rule_before_starting_a_broker(
        tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[detectors.rug_pull]\nparams = { min_liquidity = 5 }\n')
    for command in (["demo"], ["evaluate", "synth", "--out", str(tmp_path / "report")]):
        done = subprocess.run([CHAINWATCH, *command, "--config", str(config)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 2, done.stderr
        assert "detectors.rug_pull: pipeline.detectors:LiquidityDrain(**params) failed: " \
               "TypeError" in done.stderr.strip().splitlines()[-1]
        assert "bootstrap" not in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "chainwatch-data").exists() and not (tmp_path / "report").exists()
