"""Grade a rug-risk model on replayed pool data: pure functions, no Kafka, no I/O.

**Outcomes, one per pool** (:func:`pool_outcomes`):

* the *universe* is the pools with a WETH side (``token0`` or ``token1`` is WETH) whose WETH
  reserve peaks at ``min_peak_weth`` (1 WETH) or more;
* a universe pool's *event* is the first (lowest block) of its unrecovered liquidity drain
  or price crash, as :func:`pipeline.evaluation.crash_events` defines them;
* ``first_block`` is the block of the pool's first event with both reserves non-zero;
  ``age_at_event`` = event block - ``first_block``;
* universe pools without an event are the *negatives* (never-event pools);
* pools with a token listed in ``healthy_tokens.csv`` (WETH itself aside) are the
  *known-legitimate* class, counted over every pool seen with such a token, WETH side or
  not (in the 2021 data they have none, so they are outside the universe).

**Scores.** A score log holds ``(pool, block, score)`` for every pool event the model
scored, in stream order (prequential: each score given before the model learned from that
event). "A pool's score at block b" is the *last* score logged for it at or before ``b``.

**Split.** Pools fall in two halves by a stable hash: ``int(pool[-2:], 16) % 2 == 0`` is
``tune``, else ``report``. Every figure is given for ``tune``, ``report`` and ``all``; a
figure of one half uses only pools of that half (positives and negatives alike).

**Figures** (:func:`evaluate_risk`), per half:

* ``by_age`` — at pool ages 1 h, 6 h, 24 h (:data:`AGES`, 270 / 1,600 / 6,500 blocks):
  every universe pool alive at that age (no event at or before ``first_block + age``) whose
  ``first_block + age`` the stream reached, with a score by then, gives its score at
  ``first_block + age``; it is positive when its event comes later. ROC-AUC, PR-AUC
  (average precision), positives, negatives;
* ``before_event`` — 1 h, 6 h, 24 h before the event: each event pool scored at or before
  ``event - Δ`` is a positive with that score, at age ``a = event - Δ - first_block``.
  *Matching*: for each positive, the never-event pools of the same half that the stream
  observed up to their ``first_block + a`` and had a score by then are the candidates; the
  ``negatives_per_positive`` (3) candidates with the smallest
  ``sha256(f"{positive}:{Δ}:{candidate}")`` are taken (deterministic; a negative pool may
  serve several positives), each with its score at ``first_block + a``;
* ``alerts`` — with the first ``rug_risk`` alert block of each pool: of event pools that
  lived at least 1 h (6 h) before the event, the share whose first alert came at least 1 h
  (6 h) ahead (``alert <= event - Δ``); of all event pools, the shares flagged at least
  1 h / 6 h / 24 h ahead; of the fast ones (event within 1 h of ``first_block``, i.e.
  ``age_at_event < 270``) the share flagged before the event (``alert < event``); the
  share of never-event universe pools ever flagged; the share of healthy-token pools ever
  flagged; the lead times ``event - first alert`` (blocks) of event pools alerted at or
  before their event.

ROC-AUC and PR-AUC are :func:`pipeline.evaluation.roc_auc` and
:func:`pipeline.evaluation.average_precision` (None when one class is missing).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.evaluation import average_precision, crash_events, roc_auc
from pipeline.features.pools import WETH
from pipeline.records import DexEvent

BLOCKS_PER_HOUR = 270
"""About 13.2 s a block."""
AGES = {"1h": 270, "6h": 1_600, "24h": 6_500}
"""Pool ages, and lead times before the event, in blocks."""
HALVES = ("tune", "report", "all")
NEGATIVES_PER_POSITIVE = 3


def split_of(pool: str) -> str:
    """``tune`` or ``report``, by the pool address's last byte.

    >>> split_of("0x00"), split_of("0x01")
    ('tune', 'report')
    """
    return "tune" if int(pool[-2:], 16) % 2 == 0 else "report"


@dataclass(frozen=True)
class PoolOutcome:
    """What happened to one pool (see the module docstring)."""

    pool: str
    first_block: int | None  # first event with both reserves; None if it never had both
    weth_side: bool
    weth_peak: float  # ether; 0 without a WETH side
    healthy: bool
    universe: bool
    event_block: int | None = None
    event_kind: str | None = None

    @property
    def age_at_event(self) -> int | None:
        if self.event_block is None or self.first_block is None:
            return None
        return self.event_block - self.first_block

    @property
    def split(self) -> str:
        return split_of(self.pool)


def pool_outcomes(events: Sequence[DexEvent], healthy_tokens: Iterable[str],
                  min_peak_weth: float = 1.0) -> dict[str, PoolOutcome]:
    """Every pool seen in ``events`` (in stream order) with its outcome."""
    healthy = {t.lower() for t in healthy_tokens} - {WETH}
    first: dict[str, int] = {}
    peak: dict[str, float] = {}
    tokens: dict[str, tuple[str, str]] = {}
    for ev in events:
        tokens.setdefault(ev.pool_address, (ev.token0, ev.token1))
        if ev.reserve0 and ev.reserve1:
            first.setdefault(ev.pool_address, ev.block_number)
            if WETH in (ev.token0, ev.token1):
                weth = ev.reserve0 if ev.token0 == WETH else ev.reserve1
                peak[ev.pool_address] = max(peak.get(ev.pool_address, 0.0), weth / 1e18)
    crashes: dict[str, tuple[int, str]] = {}
    for crash in crash_events(events, min_peak_weth=min_peak_weth):  # sorted by block
        crashes.setdefault(crash.pool, (crash.block, crash.kind))
    out: dict[str, PoolOutcome] = {}
    for pool in sorted(tokens):
        t0, t1 = tokens[pool]
        weth_side = WETH in (t0, t1)
        universe = weth_side and peak.get(pool, 0.0) >= min_peak_weth
        block, kind = crashes.get(pool, (None, None)) if universe else (None, None)
        out[pool] = PoolOutcome(pool, first.get(pool), weth_side, peak.get(pool, 0.0),
                                bool({t0, t1} & healthy), universe, block, kind)
    return out


def priced_weth_pools(events: Iterable[DexEvent]) -> set[str]:
    """Pools with a WETH side and at least one event with both reserves non-zero."""
    return {ev.pool_address for ev in events
            if WETH in (ev.token0, ev.token1) and ev.reserve0 and ev.reserve1}


@dataclass
class ScoreIndex:
    """A score log by pool: :meth:`at` is the last score at or before a block."""

    blocks: dict[str, list[int]] = field(default_factory=dict)
    scores: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def build(cls, log: Iterable[tuple[str, int, float]]) -> ScoreIndex:
        index = cls()
        rows: dict[str, list[tuple[int, int, float]]] = {}
        for i, (pool, block, score) in enumerate(log):
            rows.setdefault(pool, []).append((block, i, score))
        for pool, points in rows.items():
            points.sort()  # by block, then log order
            index.blocks[pool] = [b for b, _, _ in points]
            index.scores[pool] = [s for _, _, s in points]
        return index

    def at(self, pool: str, block: int) -> float | None:
        blocks = self.blocks.get(pool)
        if not blocks:
            return None
        i = bisect.bisect_right(blocks, block)
        return self.scores[pool][i - 1] if i else None


def _auc(pairs: list[tuple[float, int]]) -> dict[str, Any]:
    positives = sum(y for _, y in pairs)
    return {"roc_auc": roc_auc(pairs), "pr_auc": average_precision(pairs),
            "positives": positives, "negatives": len(pairs) - positives}


def _share(num: int, den: int) -> float | None:
    return num / den if den else None


def _in_half(outcome: PoolOutcome, half: str) -> bool:
    return half in {"all", outcome.split}


def age_pairs(outcomes: Mapping[str, PoolOutcome], index: ScoreIndex, age: int,
              stream_end: int, half: str = "all") -> list[tuple[float, int]]:
    """(score at ``first_block + age``, event later) of the universe pools alive then."""
    pairs = []
    for o in outcomes.values():
        if not (o.universe and _in_half(o, half)) or o.first_block is None:
            continue
        cut = o.first_block + age
        if cut > stream_end or (o.event_block is not None and o.event_block <= cut):
            continue
        score = index.at(o.pool, cut)
        if score is not None:
            pairs.append((score, int(o.event_block is not None)))
    return pairs


def before_event_pairs(outcomes: Mapping[str, PoolOutcome], index: ScoreIndex, delta: int,
                       stream_end: int, half: str = "all", *,
                       negatives_per_positive: int = NEGATIVES_PER_POSITIVE,
                       ) -> list[tuple[float, int]]:
    """Event pools' scores ``delta`` blocks before the event, with age-matched negatives."""
    chosen = [o for o in outcomes.values() if o.universe and _in_half(o, half)
              and o.first_block is not None]
    negatives = [o for o in chosen if o.event_block is None]
    pairs: list[tuple[float, int]] = []
    for o in chosen:
        if o.event_block is None or o.first_block is None:
            continue
        moment = o.event_block - delta
        score = index.at(o.pool, moment)
        if score is None:
            continue
        pairs.append((score, 1))
        age = moment - o.first_block
        candidates = []
        for n in negatives:
            assert n.first_block is not None
            cut = n.first_block + age
            if cut > stream_end:
                continue
            matched = index.at(n.pool, cut)
            if matched is not None:
                key = hashlib.sha256(f"{o.pool}:{delta}:{n.pool}".encode()).hexdigest()
                candidates.append((key, matched))
        candidates.sort()
        pairs.extend((s, 0) for _, s in candidates[:negatives_per_positive])
    return pairs


def first_alerts(alerts: Iterable[tuple[str, int]]) -> dict[str, int]:
    """The first alert block of each subject, from (subject, block) pairs."""
    first: dict[str, int] = {}
    for subject, block in alerts:
        first[subject] = min(block, first.get(subject, block))
    return first


def alert_figures(outcomes: Mapping[str, PoolOutcome], first_alert: Mapping[str, int],
                  half: str = "all") -> dict[str, Any]:
    """The alert shares of the module docstring, for one half."""
    pools = [o for o in outcomes.values() if _in_half(o, half)]
    event = [o for o in pools if o.universe and o.event_block is not None]
    never = [o for o in pools if o.universe and o.event_block is None]
    healthy = [o for o in pools if o.healthy]

    def ahead(o: PoolOutcome, lead: int) -> bool:
        assert o.event_block is not None
        return o.pool in first_alert and first_alert[o.pool] <= o.event_block - lead

    def age(o: PoolOutcome) -> int:
        return o.age_at_event or 0

    out: dict[str, Any] = {"event_pools": len(event), "never_event_pools": len(never),
                           "healthy_pools": len(healthy)}
    for name in ("1h", "6h"):
        lead = AGES[name]
        lived = [o for o in event if age(o) >= lead]
        out[f"lived_{name}_pools"] = len(lived)
        out[f"lived_{name}_flagged_{name}_ahead_share"] = _share(
            sum(ahead(o, lead) for o in lived), len(lived))
    for name, lead in AGES.items():
        out[f"flagged_{name}_ahead_share"] = _share(sum(ahead(o, lead) for o in event),
                                                    len(event))
    fast = [o for o in event if age(o) < AGES["1h"]]
    out["fast_pools"] = len(fast)
    out["fast_flagged_before_event_share"] = _share(sum(ahead(o, 1) for o in fast), len(fast))
    out["never_event_flagged_share"] = _share(sum(o.pool in first_alert for o in never),
                                              len(never))
    out["healthy_flagged"] = sum(o.pool in first_alert for o in healthy)
    out["healthy_flagged_share"] = _share(out["healthy_flagged"], len(healthy))
    out["lead_blocks"] = sorted(o.event_block - first_alert[o.pool] for o in event
                                if ahead(o, 0) and o.event_block is not None)
    return out


@dataclass
class RiskEvaluation:
    """The figures (:attr:`summary`, JSON-ready) and the pairs behind the ROC curves."""

    summary: dict[str, Any]
    age_pairs: dict[str, dict[str, list[tuple[float, int]]]]  # half -> age name -> pairs
    before_pairs: dict[str, dict[str, list[tuple[float, int]]]]


DEFINITION = (
    "universe: pools with a WETH side whose WETH reserve peaks at >= 1 WETH; event: the "
    "first of the pool's unrecovered liquidity drain or price crash (crash_events); "
    "first_block: the pool's first event with reserves; negatives: universe pools without "
    "an event; known-legitimate: pools with a token of healthy_tokens.csv (WETH aside), over "
    "all pools; halves: int(pool[-2:], 16) % 2 == 0 is tune, else report; a pool's score at "
    "block b: its last logged score at or before b; before-event negatives: per positive, "
    "the 3 never-event pools of the half scored by their first_block + the positive's age "
    "then, with the smallest sha256(positive:delta:negative)")


def evaluate_risk(outcomes: Mapping[str, PoolOutcome], score_log: Iterable[tuple[str, int, float]],
                  alerts: Iterable[tuple[str, int]], stream_end: int, *,
                  negatives_per_positive: int = NEGATIVES_PER_POSITIVE) -> RiskEvaluation:
    """Every figure of the module docstring for ``tune``, ``report`` and ``all``.

    ``alerts`` are the model's (pool, block) alerts; ``stream_end`` the last block replayed.
    """
    index = ScoreIndex.build(score_log)
    first = first_alerts(alerts)
    universe = [o for o in outcomes.values() if o.universe]
    summary: dict[str, Any] = {
        "definition": DEFINITION, "blocks_per_hour": BLOCKS_PER_HOUR, "ages_blocks": AGES,
        "negatives_per_positive": negatives_per_positive,
        "pools": len(outcomes), "universe_pools": len(universe),
        "event_pools": sum(o.event_block is not None for o in universe),
        "events_by_kind": {k: sum(o.event_kind == k for o in universe)
                           for k in ("liquidity_drain", "price_crash")},
        "healthy_pools": sum(o.healthy for o in outcomes.values()),
        "healthy_pools_in_universe": sum(o.healthy for o in universe),
        "scored_pools": len(index.blocks), "scores": sum(len(b) for b in index.blocks.values()),
        "alerted_pools": len(first)}
    by_age: dict[str, dict[str, list[tuple[float, int]]]] = {}
    before: dict[str, dict[str, list[tuple[float, int]]]] = {}
    for half in HALVES:
        by_age[half] = {n: age_pairs(outcomes, index, a, stream_end, half)
                        for n, a in AGES.items()}
        before[half] = {n: before_event_pairs(outcomes, index, a, stream_end, half,
                                              negatives_per_positive=negatives_per_positive)
                        for n, a in AGES.items()}
        summary[half] = {"by_age": {n: _auc(p) for n, p in by_age[half].items()},
                         "before_event": {n: _auc(p) for n, p in before[half].items()},
                         "alerts": alert_figures(outcomes, first, half)}
    return RiskEvaluation(summary, by_age, before)


def roc_points(pairs: Sequence[tuple[float, int]]) -> list[tuple[float, float]]:
    """(false-positive rate, true-positive rate) at every distinct score threshold, from
    (0, 0) to (1, 1); empty when one class is missing."""
    positives = sum(y for _, y in pairs)
    negatives = len(pairs) - positives
    if not positives or not negatives:
        return []
    ordered = sorted(pairs, key=lambda p: -p[0])
    points, tp, fp, i = [(0.0, 0.0)], 0, 0, 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j][0] == ordered[i][0]:
            tp += ordered[j][1]
            fp += 1 - ordered[j][1]
            j += 1
        points.append((fp / negatives, tp / positives))
        i = j
    return points
