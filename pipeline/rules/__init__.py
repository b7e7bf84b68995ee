"""Rules: what turns a detector's scores into alerts, configured, not coded.

A *rule* binds a detector (river style: ``learn_one(x)``, ``score_one(x) -> float``, its
constructor arguments as its whole configuration) to the record kind it scores, the filter
that decides (a threshold or a running quantile, a cool-down per subject, minimum feature
values, which events are learned), the alert type (the rule's name) and the evidence the alert
reports. The built-in rules are registered like a user's: entry points of the group
``chainwatch.detectors``; the settings file adds, re-parameterises or disables rules in
``[detectors.NAME]`` tables.

* :mod:`pipeline.rules.spec` — :class:`RuleSpec`, the validated configuration of one rule;
* :mod:`pipeline.rules.rule` — :class:`Rule`, a spec at work in one scorer;
* :mod:`pipeline.rules.registry` — :class:`RuleSet`: discovery, import and start-up checks;
* :mod:`pipeline.rules.builtin` — the built-in rules and their explainers;
* :mod:`pipeline.rules.alerting` — severities, evidence and alert building.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.rules.alerting import build_alert, rounded, severity
from pipeline.rules.spec import KINDS, LEARN, RuleSpec, parse_table

if TYPE_CHECKING:
    from pipeline.rules.registry import BUILTIN, GROUP, RuleSet
    from pipeline.rules.rule import Event, Explainer, Finding, Rule, default_finding

_REGISTRY = frozenset({"BUILTIN", "GROUP", "RuleSet"})
_RULE = frozenset({"Event", "Explainer", "Finding", "Rule", "default_finding"})

__all__ = [
    "BUILTIN",
    "GROUP",
    "KINDS",
    "LEARN",
    "Event",
    "Explainer",
    "Finding",
    "Rule",
    "RuleSet",
    "RuleSpec",
    "build_alert",
    "default_finding",
    "parse_table",
    "rounded",
    "severity",
]


def __getattr__(name: str) -> Any:
    """The registry's and the rule's names, imported on first use (PEP 562): they import the
    detectors, and so river and scipy (about 1.5 s), which a reader of settings
    (:mod:`pipeline.settings` checks ``[detectors.NAME]`` tables with :mod:`.spec`) and every
    ``chainwatch`` command that scores nothing should not wait for."""
    if name in _REGISTRY:
        from pipeline.rules import registry  # noqa: PLC0415 - lazy, see __getattr__

        return getattr(registry, name)
    if name in _RULE:
        from pipeline.rules import rule  # noqa: PLC0415 - lazy, see __getattr__

        return getattr(rule, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
