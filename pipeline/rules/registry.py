"""Finding, importing and checking the rules a scorer runs.

Rules come from two places, merged by name:

* the entry-point group ``chainwatch.detectors``: each entry point is named after the alert
  type and points at a :class:`~pipeline.rules.spec.RuleSpec` (as the built-ins do) or at a
  detector class, whose class attributes ``on``, ``threshold`` or ``quantile`` give its
  defaults;
* the ``[detectors.NAME]`` tables of the settings file: a new NAME adds a rule (``class`` and
  ``on`` required), a registered NAME re-parameterises it, ``enabled = false`` removes it
  (its entry point is then not even imported).

:meth:`RuleSet.load` imports every detector class and explainer, builds each detector once
with its parameters and has it score and learn a feature dict of its kind, so a class that
does not import, takes other arguments or raises is a one-line
:class:`~pipeline.errors.ConfigError` at start-up, before anything is read. A
:class:`RuleSet` is immutable configuration; :meth:`RuleSet.build` makes the live rules of one
scorer (each scorer task has its own detectors and filters).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pipeline.detectors import Detector
from pipeline.errors import ConfigError
from pipeline.features.catalog import names
from pipeline.rules.rule import Explainer, Rule, default_finding
from pipeline.rules.spec import KINDS, RuleSpec, parse_table

GROUP = "chainwatch.detectors"
BUILTIN = ("anomalous_transfer", "pump_and_dump", "rug_pull", "rug_risk", "wash_trading")


def _import(path: str, what: str) -> Any:
    module, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise ConfigError(f"{what}: cannot import {path}: {type(exc).__name__}: {exc}; check "
                          "the module is importable (on PYTHONPATH or installed)") from None
    return obj


def _entry_point_table(ep: EntryPoint) -> tuple[RuleSpec | None, dict[str, Any]]:
    """An entry point's rule (a RuleSpec) or the defaults its detector class carries."""
    obj = _import(ep.value, f"entry point {ep.name} of {GROUP}")
    if isinstance(obj, RuleSpec):
        if obj.name != ep.name:
            raise ConfigError(f"entry point {ep.name} of {GROUP} points at the rule "
                              f"{obj.name!r}: name them alike")
        return obj, {}
    if not inspect.isclass(obj):
        raise ConfigError(f"entry point {ep.name} of {GROUP} is neither a detector class nor "
                          "a RuleSpec")
    return None, {"class": f"{obj.__module__}:{obj.__qualname__}"} | _class_defaults(obj)


def _class_defaults(cls: Any) -> dict[str, Any]:
    """The rule defaults a detector class carries: its ``on``, ``threshold``, ``quantile``."""
    return {attr: getattr(cls, attr) for attr in ("on", "threshold", "quantile")
            if getattr(cls, attr, None) is not None}


def _settings_table(name: str, table: Mapping[str, Any]) -> dict[str, Any]:
    """A settings-only rule's table over the defaults its class carries, if it names one."""
    path = table.get("class")
    if not isinstance(path, str):
        return dict(table)
    return _over(_class_defaults(_import(path, f"detectors.{name}")), table)


def _over(defaults: Mapping[str, Any], table: Mapping[str, Any]) -> dict[str, Any]:
    """``table`` over ``defaults``; a table that sets ``threshold`` or ``quantile`` does not
    inherit the other."""
    base = dict(defaults)
    if "threshold" in table or "quantile" in table:
        base.pop("threshold", None)
        base.pop("quantile", None)
    return base | dict(table)


def _params(cls: type, params: Mapping[str, Any], seed: int) -> dict[str, Any]:
    kwargs = dict(params)
    try:
        accepted = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return kwargs
    if "seed" in accepted and "seed" not in kwargs:
        kwargs["seed"] = seed
    return kwargs


@dataclass(frozen=True)
class RuleSet:
    """The enabled rules, resolved: specs in order, with their imported classes."""

    specs: tuple[RuleSpec, ...]
    classes: Mapping[str, type]
    explainers: Mapping[str, Explainer]

    @classmethod
    def load(cls, tables: Mapping[str, Mapping[str, Any]] | None = None,
             *, check: bool = True) -> RuleSet:
        """Entry points merged with the settings ``tables`` (``[detectors.NAME]``), imported
        and (``check``) tried once each; raises :class:`ConfigError`, one line, on any
        problem."""
        tables = tables or {}
        specs: dict[str, RuleSpec] = {}
        found = sorted(entry_points(group=GROUP), key=lambda ep: ep.name)
        missing = sorted(set(BUILTIN) - {ep.name for ep in found})
        if missing:
            raise ConfigError(f"the built-in detectors ({', '.join(missing)}) are not "
                              f"registered in {GROUP}: install chainwatch (pip install -e .) "
                              "so that its entry points exist")
        for ep in found:
            table = tables.get(ep.name, {})
            if table.get("enabled", True) is False:
                continue  # disabled: not even imported
            base, defaults = _entry_point_table(ep)
            specs[ep.name] = parse_table(ep.name, table, base) if base \
                else parse_table(ep.name, _over(defaults, table))
        for name, table in tables.items():
            if name not in specs and table.get("enabled", True) is not False \
                    and name not in {ep.name for ep in found}:
                specs[name] = parse_table(name, _settings_table(name, table))
        enabled = tuple(s for s in specs.values() if s.enabled)
        classes = {s.name: _import(s.detector, f"detectors.{s.name}") for s in enabled}
        for name, klass in classes.items():
            if not inspect.isclass(klass) or not callable(getattr(klass, "score_one", None)) \
                    or not callable(getattr(klass, "learn_one", None)):
                raise ConfigError(f"detectors.{name}: {specs[name].detector} is not a "
                                  "detector class (it needs learn_one(x) and score_one(x))")
        explainers = {s.name: _import(s.explain, f"detectors.{s.name}") if s.explain
                      else default_finding for s in enabled}
        ruleset = cls(enabled, classes, explainers)
        if check:
            ruleset.check()
        return ruleset

    def detector(self, name: str, seed: int = 42) -> Any:
        """A fresh detector of the rule ``name``, built with its parameters."""
        spec = next((s for s in self.specs if s.name == name), None)
        if spec is None:
            raise ConfigError(f"no active rule {name!r}; see 'chainwatch detectors list'")
        return self._build(spec, seed).detector

    def build(self, kind: str, seed: int = 42) -> list[Rule]:
        """Fresh live rules of record ``kind`` (see :data:`~pipeline.rules.spec.KINDS`)."""
        return [self._build(spec, seed) for spec in self.specs if spec.kind == kind]

    def _build(self, spec: RuleSpec, seed: int) -> Rule:
        klass = self.classes[spec.name]
        kwargs = _params(klass, spec.params, seed)
        try:
            detector: Detector = klass(**kwargs)
        except Exception as exc:
            raise ConfigError(f"detectors.{spec.name}: {spec.detector}(**params) failed: "
                              f"{type(exc).__name__}: {exc}; check its params") from None
        return Rule(spec, detector, self.explainers[spec.name], kwargs)

    def check(self) -> None:
        """Build every rule once and have it score and learn a feature dict of its kind
        (every documented feature, 0.0): a detector that raises here would at every event."""
        for spec in self.specs:
            rule = self._build(spec, seed=0)
            x = dict.fromkeys(names(spec.kind), 0.0)
            labelled = (0,) if spec.learn in ("outcomes", "labels") else ()  # learn_one(x, y)
            for method in ("score_one", "learn_one", "score_one"):
                try:
                    args = labelled if method == "learn_one" else ()
                    result = getattr(rule.detector, method)(dict(x), *args)
                    if method == "score_one":
                        float(result)
                except Exception as exc:
                    raise ConfigError(f"detectors.{spec.name}: {spec.detector}.{method} "
                                      f"failed on a feature dict of kind {spec.kind}: "
                                      f"{type(exc).__name__}: {exc}") from None

    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k in KINDS if any(s.kind == k for s in self.specs))

    def describe(self, seed: int = 42) -> list[dict[str, Any]]:
        """Every enabled rule as ``chainwatch detectors list --json`` prints it: the spec, the
        detector's name and version and its full parameters (defaults included)."""
        out = []
        for spec in self.specs:
            rule = self._build(spec, seed)
            out.append(spec.describe() | {
                "detector": rule.detector_name, "version": rule.detector_version,
                "params": rule.params(), "filter": spec.filter})
        return out
