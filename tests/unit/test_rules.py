"""Rules from entry points and settings tables: parsing, start-up checks, plug-ins that fail,
a detector that raises mid-stream, and rule state across a change of configuration."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from pipeline import state
from pipeline.errors import ConfigError
from pipeline.records import Transaction
from pipeline.rules import RuleSet, parse_table
from pipeline.scoring import Scorer
from pipeline.settings import Settings
from producers.synth import SynthConfig, SyntheticChain

PLUGIN = '''
class Constant:
    """Scores every transaction alike; learns how many it saw."""
    name = "constant"
    version = "7"
    on = "transactions"
    threshold = 0.5

    def __init__(self, level: float = 0.9) -> None:
        self.level = level
        self.seen = 0

    def learn_one(self, x):
        self.seen += 1

    def score_one(self, x):
        return self.level


class Fussy(Constant):
    """Raises on big transfers only: a bug that shows on some data."""
    def score_one(self, x):
        if x.get("log_value", 0.0) > 1.0:
            raise ZeroDivisionError("no")
        return 0.0


class Broken(Constant):
    def score_one(self, x):
        raise RuntimeError("always")
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of the user's, importable as ``userdet``."""
    (tmp_path / "userdet.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "userdet"


def _transactions(blocks: int = 120) -> list[Transaction]:
    chain = SyntheticChain(SynthConfig(seed=3, blocks=blocks))
    return [tx for block in chain.blocks() for tx in block.transactions]


def _source() -> dict[str, object]:
    return {"topic": "t", "partition": 0, "offset": 0}


@pytest.mark.parametrize(("table", "says"), [
    ({"class": "a:B", "on": "transactions"}, "exactly one of threshold"),
    ({"class": "a:B", "on": "transactions", "threshold": 0.5, "quantile": 0.9},
     "exactly one of threshold"),
    ({"class": "a:B", "threshold": 0.5}, "a new rule needs on"),
    ({"class": "not a path", "on": "dex", "threshold": 0.5}, "is not 'module:Class'"),
    ({"class": "a:B", "on": "dex", "thresold": 0.5}, "unknown key 'thresold'"),
    ({"class": "a:B", "on": "dex", "threshold": "high"}, "threshold = 'high' must be"),
    ({"class": "a:B", "on": "dex", "quantile": 1.5}, "between 0 and 1"),
    ({"class": "a:B", "on": "dex", "threshold": 0.5, "learn": "some"}, "learn = 'some'"),
])
def test_a_bad_table_is_one_line_that_names_the_key(table: dict[str, object],
                                                     says: str) -> None:
    with pytest.raises(ConfigError, match=r"detectors\.mine") as caught:
        parse_table("mine", table)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_the_settings_file_holds_detector_tables(tmp_path: Path) -> None:
    path = tmp_path / "chainwatch.toml"
    path.write_text('[detectors.rug_pull]\nthreshold = 0.7\nparams = { min_liquidity_weth = 5 }'
                    '\n[detectors.wash_trading]\nenabled = false\n')
    settings = Settings.load(path, env={})
    assert settings.detectors["rug_pull"]["threshold"] == 0.7
    assert settings.replace(consumer_group="other").detectors == settings.detectors
    rules = RuleSet.load(settings.detectors)
    names = [s.name for s in rules.specs]
    assert "wash_trading" not in names and "pump_and_dump" in names
    rug = next(s for s in rules.specs if s.name == "rug_pull")
    assert rug.threshold == 0.7 and rug.params == {"min_liquidity_weth": 5}
    assert rules.detector("rug_pull").min_liquidity_weth == 5
    path.write_text('[detectors.rug_pull]\nthreshhold = 0.7\n')
    with pytest.raises(ConfigError, match="unknown key 'threshhold'"):
        Settings.load(path, env={})


def test_a_user_class_runs_with_its_class_defaults(plugin: str) -> None:
    rules = RuleSet.load({"steady": {"class": f"{plugin}:Constant", "on": "transactions",
                                     "threshold": 0.5, "cooldown_blocks": 10_000,
                                     "params": {"level": 0.8}}})
    scorer = Scorer(rules=rules)
    alerts = [a for tx in _transactions() for a in scorer.process(tx, _source())]
    steady = [a for a in alerts if a.type == "steady"]
    assert steady and len({a.subject for a in steady}) == len(steady)  # one per sender
    assert {(a.detector, a.model_version, a.score) for a in steady} == {("constant", "7", 0.8)}
    assert steady[0].evidence["params"] == {"level": 0.8}
    # flagged events are not learned by default
    rule = next(r for r in scorer.rules if r.name == "steady")
    assert rule.detector.seen == 0


@pytest.mark.parametrize(("table", "says"), [
    ({"class": "nosuchmodule:Thing", "on": "dex", "threshold": 0.5},
     "cannot import nosuchmodule:Thing: ModuleNotFoundError"),
    ({"class": "userdet:Missing", "on": "dex", "threshold": 0.5}, "cannot import"),
    ({"class": "userdet:Constant", "on": "dex", "threshold": 0.5, "params": {"lvl": 1}},
     "Constant(**params) failed: TypeError"),
    ({"class": "userdet:Broken", "on": "dex", "threshold": 0.5},
     "userdet:Broken.score_one failed on a feature dict of kind dex: RuntimeError: always"),
])
def test_a_plugin_that_cannot_run_is_one_line_at_start_up(plugin: str,
                                                           table: dict[str, object],
                                                           says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RuleSet.load({"mine": table})
    message = str(caught.value)
    assert says in message and message.startswith("detectors.mine") and "\n" not in message


def test_a_detector_that_raises_mid_stream_scores_zero_and_is_counted(
        plugin: str, caplog: pytest.LogCaptureFixture) -> None:
    rules = RuleSet.load({"fussy": {"class": f"{plugin}:Fussy"}})  # on, threshold: class
    scorer = Scorer(rules=rules)
    with caplog.at_level(logging.WARNING):
        for tx in _transactions():
            scorer.process(tx, _source())
    errors = scorer.metrics()["rule_errors_fussy"]
    assert errors > 1
    warnings = [r.getMessage() for r in caplog.records if "rule fussy" in r.getMessage()]
    assert len(warnings) == 1 and "ZeroDivisionError: no" in warnings[0]


def test_a_changed_rule_starts_fresh_and_the_others_resume(plugin: str) -> None:
    table = {"class": f"{plugin}:Constant", "threshold": 0.95}  # never alerts: always learns
    before = Scorer(rules=RuleSet.load({"steady": table}))
    txs = _transactions(60)
    for tx in txs:
        before.process(tx, _source())
    saved = state.decode(state.encode(before.state()))
    same = Scorer(rules=RuleSet.load({"steady": table}))
    assert same.load_state(saved) == []
    seen = {r.name: getattr(r.detector, "seen", None) for r in same.rules}
    assert seen["steady"] == len(txs)  # a plug-in without state() is kept as a pickle
    changed = Scorer(rules=RuleSet.load({"steady": table | {"params": {"level": 0.1}},
                                         "wash_trading": {"enabled": False}}))
    notes = changed.load_state(saved)
    assert any("rule steady: its detector was" in n for n in notes)
    assert any("rules wash_trading of the checkpoint are not configured" in n for n in notes)
    fresh = next(r for r in changed.rules if r.name == "steady")
    assert fresh.detector.seen == 0
    anomaly = next(r for r in changed.rules if r.name == "anomalous_transfer")
    assert anomaly.detector.seen == next(
        r for r in before.rules if r.name == "anomalous_transfer").detector.seen > 0
