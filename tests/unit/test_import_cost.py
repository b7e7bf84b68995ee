"""Starting a ``chainwatch`` command that scores nothing does not import river or scipy.

``import pipeline`` runs first for every command, and ``pipeline.settings`` for nearly every
one; river's anomaly models pull in scipy.stats, about 1.5 s of the 2 s a bare ``chainwatch
--help`` used to take. pipeline/__init__.py and pipeline/rules/__init__.py import the
detectors, the rule registry and the scorer on first use instead (PEP 562 ``__getattr__``).
The suite starts the CLI hundreds of times, so this is most of its CLI tests' time too.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import pipeline
import pipeline.rules

HEAVY = ("river", "scipy", "pipeline.detectors", "pipeline.scoring", "pipeline.rules.registry")


def _imported_by(code: str) -> set[str]:
    """The HEAVY modules a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return {m for m in json.loads(out) if m.split(".")[0] in HEAVY or m in HEAVY}


def test_the_cli_and_the_settings_start_without_river_or_the_detectors() -> None:
    assert _imported_by("import pipeline, pipeline.settings, pipeline.cli") == set()
    assert _imported_by("from pipeline.cli import build_parser; build_parser()") == set()


def test_the_lazy_names_are_the_real_ones_and_unknown_names_still_fail() -> None:
    from pipeline.detectors import Detector
    from pipeline.rules.registry import RuleSet
    from pipeline.rules.rule import Rule
    from pipeline.scoring import Scorer

    assert (pipeline.Detector, pipeline.RuleSet, pipeline.Scorer) == (Detector, RuleSet, Scorer)
    assert (pipeline.rules.RuleSet, pipeline.rules.Rule) == (RuleSet, Rule)
    assert _imported_by("from pipeline import Scorer") >= {"river", "pipeline.scoring"}
    for module in (pipeline, pipeline.rules):
        with pytest.raises(AttributeError, match="no_such_name"):
            module.no_such_name  # noqa: B018 - the lookup is the test
