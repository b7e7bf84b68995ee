"""chainwatch's public Python API: score chain records with chainwatch's rules, without Kafka.

The services (``chainwatch score``, ``demo``, ``evaluate``) are built from these parts, and a
researcher can use them directly, e.g. in a notebook on a pandas DataFrame of records:

* records — :class:`Transaction`, :class:`DexEvent`, :class:`TokenTransfer`, :class:`Label`
  (frozen, validated by ``from_dict``; bad input raises :class:`RecordError`), and
  :func:`records_from_frame` for the rows of a DataFrame;
* :class:`Scorer` — one partition's state and rules: ``process(record, source)`` returns the
  :class:`Alert` objects a record triggers; :func:`score` runs many records through one;
* :class:`Detector` (the protocol a detector follows), :class:`RuleSpec` and
  :class:`RuleSet` (rules from the entry points and ``[detectors.NAME]`` tables), and the
  filters :class:`ThresholdFilter` and :class:`QuantileFilter`;
* :class:`Settings` — the one settings object (file, ``CHAINWATCH_*`` variables, flags);
* :class:`ChainwatchError`, the root of every error chainwatch raises on purpose.

Everything else is internal and may change between releases.

A DataFrame of DEX events in the wire format (``type`` names the record kind; amounts may be
ints or decimal strings) — a pool whose liquidity is pulled in one block:

>>> import pandas as pd
>>> from pipeline.features.pools import WETH as weth
>>> pool, token = "0x" + "aa" * 20, "0x" + "bb" * 20
>>> rows = [{"type": "dex_event", "pool_address": pool, "token0": weth, "token1": token,
...          "kind": "sync", "block_number": 100 + i, "block_timestamp": 1_700_000_000 + 12 * i,
...          "transaction_hash": f"0x{i:064x}", "log_index": 0,
...          "reserve0": str(reserve * 10**18), "reserve1": str(10**24)}
...         for i, reserve in enumerate([50, 50, 51, 50, 1])]
>>> frame = pd.DataFrame(rows)
>>> from pipeline import RuleSet, Scorer, records_from_frame, score
>>> alerts = score(records_from_frame(frame))
>>> [(a.type, a.severity, a.subject == pool, a.labels["block_number"]) for a in alerts]
[('rug_pull', 'critical', True, 104)]

A rule set of one's own (here the built-ins, with the rug-pull rule re-parameterised):

>>> rules = RuleSet.load({"rug_pull": {"params": {"min_liquidity_weth": 100.0}}})
>>> score(records_from_frame(frame), Scorer(rules=rules))
[]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from pipeline.alerts import Alert
from pipeline.codec import from_wire_dict
from pipeline.errors import ChainwatchError, RecordError
from pipeline.records import ChainRecord, DexEvent, Label, TokenTransfer, Transaction
from pipeline.rules import RuleSpec
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.detectors import Detector, QuantileFilter, ThresholdFilter
    from pipeline.rules import RuleSet
    from pipeline.scoring import Scorer

_DETECTORS = frozenset({"Detector", "QuantileFilter", "ThresholdFilter"})

__all__ = [
    "Alert",
    "ChainRecord",
    "ChainwatchError",
    "Detector",
    "DexEvent",
    "Label",
    "QuantileFilter",
    "RecordError",
    "RuleSet",
    "RuleSpec",
    "Scorer",
    "Settings",
    "ThresholdFilter",
    "TokenTransfer",
    "Transaction",
    "records_from_frame",
    "score",
]


def records_from_frame(frame: Any, kind: str | None = None) -> Iterator[ChainRecord]:
    """The rows of a pandas DataFrame as validated records, in row order.

    Each row is a record in the wire format: a ``type`` column names its kind
    (``transaction``, ``dex_event``, ``token_transfer``, ``label``), or ``kind`` gives one for
    every row. Missing values (NaN, None) count as absent fields. A row that is not a valid
    record raises :class:`RecordError` naming the field.
    """
    for row in frame.to_dict(orient="records"):
        fields = {k: v for k, v in row.items() if not _missing(v)}
        if kind is not None:
            fields["type"] = kind
        yield from_wire_dict(fields)


def score(records: Iterable[ChainRecord], scorer: Scorer | None = None) -> list[Alert]:
    """Every alert ``records`` trigger, in order, in ``scorer`` (a new default one if None).
    Each alert's ``source`` says the record's position in ``records``."""
    from pipeline.scoring import Scorer  # noqa: PLC0415 - lazy, see __getattr__

    scorer = scorer if scorer is not None else Scorer()
    alerts: list[Alert] = []
    for i, record in enumerate(records):
        alerts += scorer.process(record, {"topic": "dataframe", "partition": 0, "offset": i})
    return alerts


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def __getattr__(name: str) -> Any:
    """The detectors, :class:`RuleSet` and :class:`Scorer`, imported on first use (PEP 562):
    they import river and scipy (about 1.5 s), which every ``chainwatch`` command would
    otherwise wait for, as ``import pipeline`` runs first."""
    if name in _DETECTORS:
        from pipeline import detectors  # noqa: PLC0415 - lazy, see __getattr__

        return getattr(detectors, name)
    if name == "RuleSet":
        from pipeline.rules import RuleSet  # noqa: PLC0415 - lazy, see __getattr__

        return RuleSet
    if name == "Scorer":
        from pipeline.scoring import Scorer  # noqa: PLC0415 - lazy, see __getattr__

        return Scorer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
