"""Compare alerts with ground truth: pure functions, no I/O.

**What matches what.** An alert *matches* a campaign (a dict of
``SyntheticChain(...).truth``) when it has the campaign's ``type``, its subject is the
campaign's ``subject`` — or, for address-subject types (``anomalous_transfer``), one of the
campaign's ``participants`` — and its block (``alert.labels["block_number"]``) lies within
``[start_block, end_block + grace]``: detections from windowed features may trail a campaign
by up to their window. An alert matching no campaign of its type is a *false alert*.

Per type, :func:`evaluate_synthetic` reports:

* ``precision`` — matching alerts / alerts; ``recall`` — campaigns with a matching alert /
  campaigns; ``f1``; ``false_per_10k`` — false alerts per 10,000 events scored;
* delays of each detected campaign's *first* matching alert, in blocks: from the campaign
  start, from its onset (the pump of a pump-and-dump, the hype of a rug pull, the first
  outflow of an anomalous transfer) and relative to its malicious move (the dump, the
  drain; negative means before it), with their medians, the share of campaigns alerted
  before the move and the share alerted by the move's next block;
* a per-campaign ``hits`` list.

For replayed data without campaigns, :func:`crash_events` defines liquidity drains and price
crashes from the DEX stream itself, and :func:`evaluate_events` scores alerts against them.
:func:`roc_auc` and :func:`average_precision` are exact, tie-aware prequential metrics for
(score, label) pairs.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.alerts import Alert
from pipeline.features.pools import WETH
from pipeline.records import DexEvent

GRACE_BLOCKS = 20
"""Blocks after a campaign's end in which an alert still matches it (the longest feature
window)."""
ADDRESS_SUBJECT_TYPES = frozenset({"anomalous_transfer"})
ONSET_PHASE = {"pump_and_dump": "pump", "rug_pull": "hype", "anomalous_transfer": "move"}
MOVE_PHASE = {"pump_and_dump": "dump", "rug_pull": "drain"}


def alert_block(alert: Alert) -> int:
    return int(alert.labels["block_number"])


def matches(alert: Alert, campaign: dict[str, Any], grace: int = GRACE_BLOCKS) -> bool:
    """Does ``alert`` match ``campaign`` (see the module docstring)?"""
    if alert.type != campaign["type"]:
        return False
    if not campaign["start_block"] <= alert_block(alert) <= campaign["end_block"] + grace:
        return False
    if alert.subject == campaign["subject"]:
        return True
    return alert.type in ADDRESS_SUBJECT_TYPES and alert.subject in campaign["participants"]


def _median(values: list[int]) -> float | None:
    return float(statistics.median(values)) if values else None


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None:
        return None
    return 2 * p * r / (p + r) if p + r else 0.0


def _hit(campaign: dict[str, Any], found: list[Alert]) -> dict[str, Any]:
    kind, phases = campaign["type"], campaign["phases"]
    hit: dict[str, Any] = {k: campaign[k] for k in ("campaign_id", "type", "subject",
                                                    "start_block", "end_block")}
    hit["detected"] = bool(found)
    hit["alerts"] = len(found)
    if found:
        first = min(alert_block(a) for a in found)
        hit["first_alert_block"] = first
        hit["delay_from_start"] = first - campaign["start_block"]
        if kind in ONSET_PHASE and ONSET_PHASE[kind] in phases:
            hit["delay_from_onset"] = first - phases[ONSET_PHASE[kind]]
        if kind in MOVE_PHASE and MOVE_PHASE[kind] in phases:
            hit["delay_vs_move"] = first - phases[MOVE_PHASE[kind]]
        hit["alert_ids"] = sorted(a.alert_id for a in found)
    return hit


def evaluate_synthetic(alerts: Sequence[Alert], truth: Sequence[dict[str, Any]], events: int,
                       grace: int = GRACE_BLOCKS) -> dict[str, Any]:
    """Per alert type: precision, recall, F1, delays, false alerts per 10k, hits.

    Types are those of the campaigns and of the alerts; a type without campaigns (for
    example ``model_drift``) reports its count and ``false_per_10k`` only.
    """
    types = sorted({c["type"] for c in truth} | {a.type for a in alerts})
    report: dict[str, Any] = {}
    for kind in types:
        campaigns = [c for c in truth if c["type"] == kind]
        typed = [a for a in alerts if a.type == kind]
        by_campaign: dict[str, list[Alert]] = {c["campaign_id"]: [] for c in campaigns}
        true = 0
        for alert in typed:
            hit = [c["campaign_id"] for c in campaigns if matches(alert, c, grace)]
            true += bool(hit)
            for cid in hit:
                by_campaign[cid].append(alert)
        hits = [_hit(c, by_campaign[c["campaign_id"]]) for c in campaigns]
        report[kind] = _summary(hits, len(typed), true, events)
    return report


def merge_reports(reports: Sequence[dict[str, Any]], events: int) -> dict[str, Any]:
    """Pool several :func:`evaluate_synthetic` reports (e.g. one per seed) into one,
    recomputing every ratio and median from the pooled hits and counts."""
    merged: dict[str, Any] = {}
    for kind in sorted({k for r in reports for k in r}):
        parts = [r[kind] for r in reports if kind in r]
        merged[kind] = _summary([h for p in parts for h in p["hits"]],
                                sum(p["alerts"] for p in parts),
                                sum(p["true_alerts"] for p in parts), events)
    return merged


def _summary(hits: list[dict[str, Any]], n_alerts: int, true: int,
             events: int) -> dict[str, Any]:
    detected = [h for h in hits if h["detected"]]
    precision = _ratio(true, n_alerts) if hits else None
    recall = _ratio(len(detected), len(hits))
    moves = [h["delay_vs_move"] for h in detected if "delay_vs_move" in h]
    return {
        "campaigns": len(hits), "detected": len(detected), "alerts": n_alerts,
        "true_alerts": true, "false_alerts": n_alerts - true,
        "precision": precision, "recall": recall, "f1": _f1(precision, recall),
        "false_per_10k": 1e4 * (n_alerts - true) / events if events else None,
        "median_delay_from_start": _median([h["delay_from_start"] for h in detected]),
        "median_delay_from_onset": _median([h["delay_from_onset"] for h in detected
                                            if "delay_from_onset" in h]),
        "median_delay_vs_move": _median(moves),
        "before_move_share": _ratio(sum(m < 0 for m in moves), len(moves)),
        "by_move_plus_1_share": _ratio(sum(m <= 1 for m in moves), len(moves)),
        "hits": hits,
    }


# -- prequential metrics -----------------------------------------------------------------------


def roc_auc(pairs: Iterable[tuple[float, int]]) -> float | None:
    """Exact ROC-AUC of (score, label) pairs; ties count one half. None if one class only.

    >>> roc_auc([(0.9, 1), (0.8, 0), (0.7, 1), (0.1, 0)]), roc_auc([(0.5, 1), (0.5, 0)])
    (0.75, 0.5)
    """
    ordered = sorted(pairs)
    positives = sum(1 for _, y in ordered if y)
    negatives = len(ordered) - positives
    if not positives or not negatives:
        return None
    rank_sum, i = 0.0, 0
    while i < len(ordered):  # average ranks over tie groups
        j = i
        while j < len(ordered) and ordered[j][0] == ordered[i][0]:
            j += 1
        mean_rank = (i + 1 + j) / 2
        rank_sum += mean_rank * sum(1 for _, y in ordered[i:j] if y)
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def average_precision(pairs: Iterable[tuple[float, int]]) -> float | None:
    """Exact PR-AUC as average precision, a tie group counted as one threshold.

    >>> average_precision([(0.9, 1), (0.8, 0), (0.7, 1), (0.1, 0)])
    0.8333333333333333
    """
    ordered = sorted(pairs, key=lambda p: -p[0])
    positives = sum(1 for _, y in ordered if y)
    if not positives:
        return None
    ap, tp, seen, i = 0.0, 0, 0, 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j][0] == ordered[i][0]:
            j += 1
        group_tp = sum(1 for _, y in ordered[i:j] if y)
        tp, seen = tp + group_tp, seen + (j - i)
        ap += group_tp / positives * (tp / seen)
        i = j
    return ap


# -- replayed data: liquidity drains and price crashes ---------------------------------------


@dataclass(frozen=True)
class CrashEvent:
    """A pool's first unrecovered collapse of its WETH reserve or of its price."""

    pool: str
    kind: str  # "liquidity_drain" | "price_crash"
    block: int  # the first block at or below the threshold
    peak: float  # running peak before it (WETH in ether, or WETH per token unit)
    trough: float  # the lowest value afterwards
    after_peak: float  # the highest value after the collapse


def crash_events(events: Iterable[DexEvent], drop: float = 0.9, recovery: float = 0.2,
                 min_peak_weth: float = 1.0) -> list[CrashEvent]:
    """Liquidity drains and price crashes of each pool, from its reserves.

    A pool's WETH reserve (its liquidity) *drains* at the first block where it is at most
    ``1 - drop`` of its running peak (≥ 90 % gone by default); its price *crashes* likewise
    against the price's running peak. Either counts only when it does not recover: until
    the end of the stream, the value never climbs back by more than ``recovery`` of what was
    lost (trough + 20 % of peak - trough by default). Pools whose WETH peak stays under
    ``min_peak_weth`` ether are ignored, and so are rows without reserves and pools without
    a WETH side. At most one event of each kind per pool (the first unrecovered one).
    """
    series: dict[str, list[tuple[int, float, float]]] = {}
    for ev in events:
        if WETH not in (ev.token0, ev.token1):
            continue  # no priced side: neither a drain nor a crash can be measured in WETH
        weth_is_0 = ev.token0 == WETH
        weth, token = (ev.reserve0, ev.reserve1) if weth_is_0 else (ev.reserve1, ev.reserve0)
        if weth and token:
            series.setdefault(ev.pool_address, []).append((ev.block_number, weth / 1e18,
                                                           weth / token))
    found: list[CrashEvent] = []
    for pool, points in series.items():
        if max(p[1] for p in points) < min_peak_weth:
            continue
        for kind, column in (("liquidity_drain", 1), ("price_crash", 2)):
            event = _first_unrecovered(pool, kind, points, column=column, drop=drop,
                                       recovery=recovery)
            if event is not None:
                found.append(event)
    return sorted(found, key=lambda e: (e.block, e.pool, e.kind))


def _first_unrecovered(pool: str, kind: str, points: list[tuple[int, float, float]], *,
                       column: int, drop: float, recovery: float) -> CrashEvent | None:
    # suffix maxima: the highest value from each index to the end
    suffix = [0.0] * (len(points) + 1)
    for i in range(len(points) - 1, -1, -1):
        suffix[i] = max(suffix[i + 1], points[i][column])
    peak = 0.0
    for i, point in enumerate(points):
        value = point[column]
        if peak > 0 and value <= (1 - drop) * peak:
            trough = min(p[column] for p in points[i:])
            after = suffix[i]
            if after < trough + recovery * (peak - trough):
                return CrashEvent(pool, kind, point[0], peak, trough, after)
        peak = max(peak, value)
    return None


def evaluate_events(alerts: Sequence[Alert], crashes: Sequence[CrashEvent],
                    types: tuple[str, ...] = ("rug_pull",), lead_blocks: int = 100,
                    grace: int = GRACE_BLOCKS) -> dict[str, Any]:
    """Alerts of ``types`` against crash events: an alert matches an event of its subject
    pool when its block is within ``[block - lead_blocks, block + grace]``;
    ``delays_vs_event`` lists, for each detected event, its first matching alert's block
    minus the event's (negative: before it)."""
    typed = [a for a in alerts if a.type in types]
    by_pool: dict[str, list[CrashEvent]] = {}
    for crash in crashes:
        by_pool.setdefault(crash.pool, []).append(crash)
    true, detected, delays = 0, set(), []
    for alert in typed:
        block = alert_block(alert)
        hit = [c for c in by_pool.get(alert.subject, [])
               if c.block - lead_blocks <= block <= c.block + grace]
        true += bool(hit)
        for crash in hit:
            if (crash.pool, crash.kind) not in detected:
                detected.add((crash.pool, crash.kind))
                delays.append(block - crash.block)
    pools = {c.pool for c in crashes}
    detected_pools = {p for p, _ in detected}
    precision = _ratio(true, len(typed))
    recall = _ratio(len(detected_pools), len(pools))
    return {"events": len(crashes), "pools": len(pools), "alerts": len(typed),
            "true_alerts": true, "precision": precision, "recall": recall,
            "f1": _f1(precision, recall), "median_delay_vs_event": _median(delays),
            "delays_vs_event": sorted(delays)}
