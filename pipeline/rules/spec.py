"""A rule's configuration: what a ``[detectors.NAME]`` table or an entry point says.

A :class:`RuleSpec` is plain, validated data. It names the detector class (``"module:Class"``,
imported only when the rules are built), the record kind it scores, the filter that decides,
and what the alert reports. Settings tables are parsed with :func:`parse_table` as soon as
the settings file is read, so a misspelt key is one line at start-up, before any import.

>>> spec = parse_table("big_gas", {"class": "mydetectors:GasSpike", "on": "transactions",
...                                "threshold": 0.8, "params": {"factor": 5}})
>>> spec.name, spec.kind, spec.filter, spec.params
('big_gas', 'transactions', 'threshold 0.8, cool-down 100 blocks', {'factor': 5})
>>> try:
...     parse_table("big_gas", {"class": "mydetectors:GasSpike", "on": "blocks"})
... except ConfigError as exc:
...     print(exc)
detectors.big_gas: on = 'blocks' is not a record kind; use one of dex, transactions, trades
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigError

KINDS = ("dex", "transactions", "trades")
"""Record kinds a rule can score: DEX events of a pool, transactions of an address, and trades
of a market (an exchange's, or a DEX pool's swaps as trades)."""
LEARN = ("unflagged", "all", "none", "outcomes", "labels")
"""Which scored events a rule's detector learns: those its filter did not flag (the default:
a detector never learns the outliers it reports), every one, none, or (``dex`` rules) none
directly but the pools' delayed outcomes: ``learn_one(x, y)`` with y = 1 for a snapshot of a
pool later drained or crashed within the horizon, 0 for one that survived it
(:mod:`pipeline.scoring.outcomes`), or (``trades`` rules) the labels of announced pumps:
``learn_one(x, y)`` for each candidate moment once its stream's label says whether it was a
pump (:mod:`pipeline.scoring.trades`)."""
NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
CLASS_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
DEFAULT_COOLDOWN_BLOCKS = 100


@dataclass(frozen=True)
class RuleSpec:
    """One rule: a detector bound to a record kind, a filter, an alert type and evidence.

    Exactly one of ``threshold`` (alert when the score is at least this) and ``quantile``
    (alert when the score is at or above that running quantile of the last ``window``
    scores, after ``warmup`` scores) is set. ``require`` holds minimum feature values an
    event must also reach to alert (it is learned as the filter says either way).
    ``evidence`` names the features an alert reports (None: every feature of the event).
    ``explain`` optionally names a function ``module:function`` that builds an alert's
    evidence, item ids, addresses and severity (the built-ins have one each).
    """

    name: str
    detector: str  # "module:Class"
    kind: str
    threshold: float | None = None
    quantile: float | None = None
    window: int = 5_000
    warmup: int = 2_000
    cooldown_blocks: int = DEFAULT_COOLDOWN_BLOCKS
    learn: str = "unflagged"
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    require: Mapping[str, float] = field(default_factory=dict, hash=False)
    evidence: tuple[str, ...] | None = None
    explain: str | None = None
    drift: bool = True
    enabled: bool = True

    def __post_init__(self) -> None:
        where = f"detectors.{self.name}"
        if not NAME.fullmatch(self.name):
            raise ConfigError(f"{where}: a rule name is lower-case letters, digits and _ "
                              "(it is the alert type), starting with a letter")
        if not CLASS_PATH.fullmatch(self.detector):
            raise ConfigError(f"{where}: class = {self.detector!r} is not 'module:Class'")
        if self.kind not in KINDS:
            raise ConfigError(f"{where}: on = {self.kind!r} is not a record kind; use one of "
                              f"{', '.join(KINDS)}")
        if (self.threshold is None) == (self.quantile is None):
            raise ConfigError(f"{where}: give exactly one of threshold (a score) or quantile "
                              "(a running quantile, e.g. 0.999)")
        if self.quantile is not None and not 0.0 < self.quantile < 1.0:
            raise ConfigError(f"{where}: quantile must lie between 0 and 1, not "
                              f"{self.quantile}")
        if min(self.window, self.warmup + 1, self.cooldown_blocks + 1) < 1:
            raise ConfigError(f"{where}: window must be at least 1, warmup and "
                              "cooldown_blocks at least 0")
        if self.learn not in LEARN:
            raise ConfigError(f"{where}: learn = {self.learn!r}; use one of {', '.join(LEARN)}")
        if self.learn == "outcomes" and self.kind != "dex":
            raise ConfigError(f"{where}: learn = 'outcomes' is for rules on dex (pool "
                              f"outcomes); this one is on {self.kind}")
        if self.learn == "labels" and self.kind != "trades":
            raise ConfigError(f"{where}: learn = 'labels' is for rules on trades (labelled "
                              f"pumps); this one is on {self.kind}")
        if self.explain is not None and not CLASS_PATH.fullmatch(self.explain):
            raise ConfigError(f"{where}: explain = {self.explain!r} is not 'module:function'")

    @property
    def filter(self) -> str:
        """The filter in words, as ``chainwatch detectors list`` shows it."""
        if self.quantile is not None:
            cut = f"quantile {self.quantile} of the last {self.window} scores (after " \
                  f"{self.warmup})"
        else:
            cut = f"threshold {self.threshold}"
        needs = "".join(f", {k} >= {v}" for k, v in sorted(self.require.items()))
        return f"{cut}{needs}, cool-down {self.cooldown_blocks} blocks"

    def describe(self) -> dict[str, Any]:
        """The spec as JSON-ready data (for ``detectors list --json``)."""
        out = dataclasses.asdict(self)
        out["on"] = out.pop("kind")
        out["class"] = out.pop("detector")
        out["params"] = dict(self.params)
        out["require"] = dict(self.require)
        out["evidence"] = list(self.evidence) if self.evidence is not None else None
        return out


_KEYS: dict[str, tuple[type, ...]] = {
    "class": (str,), "on": (str,), "threshold": (int, float), "quantile": (float,),
    "window": (int,), "warmup": (int,), "cooldown_blocks": (int,), "learn": (str,),
    "params": (dict,), "require": (dict,), "evidence": (list,), "explain": (str,),
    "drift": (bool,), "enabled": (bool,),
}
_FIELDS = {"class": "detector", "on": "kind"}


def check_table(name: str, table: Any) -> None:
    """Raise :class:`ConfigError` if ``[detectors.NAME]`` has an unknown key or a value of
    the wrong type (what can be checked before the registered rules are known)."""
    where = f"detectors.{name}"
    if not NAME.fullmatch(str(name)):
        raise ConfigError(f"{where}: a rule name is lower-case letters, digits and _ "
                          "(it is the alert type), starting with a letter")
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table ([detectors.{name}] with class, on, ...)")
    for key, value in table.items():
        kinds = _KEYS.get(key)
        if kinds is None:
            raise ConfigError(f"{where}: unknown key {key!r}; known keys are "
                              f"{', '.join(sorted(_KEYS))}")
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise ConfigError(f"{where}: {key} = {value!r} must be "
                              f"{' or '.join(k.__name__ for k in kinds)}")


def parse_table(name: str, table: Mapping[str, Any],
                base: RuleSpec | None = None) -> RuleSpec:
    """The rule ``[detectors.NAME]`` describes, over ``base`` (a built-in or an entry
    point's defaults) when the name is already registered.

    Giving ``threshold`` replaces a base's ``quantile`` and the other way round; ``params``
    are merged key by key over the base's.
    """
    where = f"detectors.{name}"
    check_table(name, table)
    values: dict[str, Any] = {}
    for key, value in table.items():
        values[_FIELDS.get(key, key)] = value
    if "evidence" in values:
        if not all(isinstance(v, str) for v in values["evidence"]):
            raise ConfigError(f"{where}: evidence must be a list of feature names")
        values["evidence"] = tuple(values["evidence"])
    if "require" in values:
        bad = [k for k, v in values["require"].items()
               if isinstance(v, bool) or not isinstance(v, int | float)]
        if bad:
            raise ConfigError(f"{where}: require.{bad[0]} must be a number (a minimum)")
        values["require"] = {k: float(v) for k, v in values["require"].items()}
    if "threshold" in values:
        values["threshold"] = float(values["threshold"])
    if base is None:
        for key in ("class", "on"):
            if _FIELDS[key] not in values:
                raise ConfigError(f"{where}: a new rule needs {key} (see 'chainwatch "
                                  "detectors list' for the registered ones)")
        values.setdefault("name", name)
        return RuleSpec(**values)
    if "threshold" in values:
        values.setdefault("quantile", None)
    if "quantile" in values:
        values.setdefault("threshold", None)
    if "params" in values:
        values["params"] = {**base.params, **values["params"]}
    return dataclasses.replace(base, **values)
