"""The rug-risk model on the real uniswap-v2-2021 replay, in process (not a test).

    python bench/rug_risk.py                          # ../shared/data/uniswap-v2-2021
    python bench/rug_risk.py --thresholds 0.9,0.95,0.97 --json out.json
    python bench/rug_risk.py --rule '{"params": {"estimator": "logistic"}}'

Replays every pool event of the dataset in chain order through 4 Scorers partitioned by
pool as the service partitions them (murmur2(pool_address) % 4), logs the ``rug_risk`` rule's
score at every event, and grades it with :mod:`pipeline.risk_evaluation` on both halves of
the pools (``tune``: even last byte, ``report``: odd): ROC-AUC / PR-AUC at pool ages and
before the event, and, for each threshold, what alerting at it would give (a pool's first
alert is its first score at or above the threshold: the rule's cool-down only spaces later
ones). Choose the threshold on ``tune``; read the figures on ``report``. The same figures
come from ``chainwatch evaluate uniswap-v2`` through a broker, for the configured threshold.
Which features matter: ``bench/rug_risk_ablation.py`` (reuses :func:`replay` and
:func:`score`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kafka.partitioner.default import murmur2  # noqa: E402

from bench.detect import replay as detect_replay  # noqa: E402
from consumers.evaluate import read_healthy_tokens  # noqa: E402
from pipeline.records import DexEvent  # noqa: E402
from pipeline.risk_evaluation import (  # noqa: E402
    HALVES,
    PoolOutcome,
    evaluate_risk,
    pool_outcomes,
)
from pipeline.rules import Rule, RuleSet  # noqa: E402
from pipeline.scoring import Scorer  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "uniswap-v2-2021"
PARTITIONS = 4


def replay(path: Path) -> list[DexEvent]:
    """The dataset's pool events in chain order (the replay producer's mapping)."""
    records, _ = detect_replay("uniswap-v2", path)
    return [r for r in records if isinstance(r, DexEvent)]


def score(events: list[DexEvent], table: dict[str, Any]) -> tuple[
        list[tuple[str, int, float]], float, list[Rule]]:
    """The rug_risk score log of every event, the events per second and the partitions'
    ``rug_risk`` rules as the replay left them; ``table`` is the ``[detectors.rug_risk]``
    settings table to run with."""
    ruleset = RuleSet.load({"rug_risk": table} if table else {})
    scorers = [Scorer(rules=ruleset) for _ in range(PARTITIONS)]
    rules = [next(r for r in scorer.rules if r.name == "rug_risk") for scorer in scorers]
    logs: list[list[tuple[str, int, float]]] = []
    for rule in rules:
        rule.score_log = []
        logs.append(rule.score_log)
    source = {"topic": "uniswap", "partition": 0, "offset": 0}
    started = time.perf_counter()
    for ev in events:
        part = (murmur2(ev.pool_address.encode()) & 0x7FFFFFFF) % PARTITIONS
        scorers[part].process(ev, source)
    elapsed = time.perf_counter() - started
    merged = sorted((entry for log in logs for entry in log), key=lambda e: e[1])
    return merged, len(events) / elapsed, rules


def tuned_threshold(outcomes: dict[str, PoolOutcome], log: list[tuple[str, int, float]],
                    target: float) -> float:
    """The lowest threshold at which at most ``target`` of the tune half's never-drained
    universe pools would ever be flagged (their highest scores, ranked)."""
    highest: dict[str, float] = {}
    for pool, _, s in log:
        o = outcomes.get(pool)
        if o is not None and o.universe and o.event_block is None and o.split == "tune":
            highest[pool] = max(s, highest.get(pool, 0.0))
    never = sum(1 for o in outcomes.values()
                if o.universe and o.event_block is None and o.split == "tune")
    ranked = sorted(highest.values(), reverse=True)
    allowed = int(target * never)  # pools that may be flagged
    if allowed >= len(ranked):
        return min(ranked, default=0.0)
    return ranked[allowed] + 1e-9  # just above the first pool that must stay unflagged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", type=Path, default=DATA)
    parser.add_argument("--thresholds", default="", help="more thresholds to grade, e.g. 0.9,0.95")
    parser.add_argument("--rule", type=json.loads, default={}, metavar="JSON",
                        help='the [detectors.rug_risk] table to run with, as JSON, e.g. '
                             '\'{"params": {"estimator": "logistic"}}\'')
    parser.add_argument("--target-false", type=float, default=0.10, metavar="SHARE",
                        help="tune the threshold on the tune half so that at most SHARE of "
                             "its never-drained pools are ever flagged (default 0.10)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",") if t]
    events = replay(args.path)
    outcomes = pool_outcomes(events, read_healthy_tokens(args.path))
    log, rate, _ = score(events, args.rule)
    end = events[-1].block_number
    print(f"{len(events):,} events, {rate:,.0f} events/s; {len(log):,} risk scores")
    tuned = tuned_threshold(outcomes, log, args.target_false)
    print(f"threshold tuned on the tune half to flag at most {args.target_false:.0%} of its "
          f"never-drained pools: {tuned:.4f}")
    thresholds = sorted({*thresholds, tuned})
    report: dict[str, Any] = {"events": len(events), "events_per_s": rate, "thresholds": {},
                              "tuned_threshold": tuned, "target_false": args.target_false}
    for threshold in thresholds:
        alerts = [(pool, block) for pool, block, s in log if s >= threshold]
        result = evaluate_risk(outcomes, log, alerts, end)
        report["thresholds"][threshold] = result.summary
        print(f"\nthreshold {threshold}")
        for half in HALVES:
            figures = result.summary[half]
            ages = " ".join(f"{n}:{_f(v['roc_auc'])}" for n, v in figures["by_age"].items())
            before = " ".join(f"{n}:{_f(v['roc_auc'])}"
                              for n, v in figures["before_event"].items())
            a = figures["alerts"]
            print(f"  {half:7s} ROC by age {ages} | before event {before}\n"
                  f"          flagged: lived 1h, 1h ahead "
                  f"{_f(a['lived_1h_flagged_1h_ahead_share'])}"
                  f" · lived 6h, 6h ahead {_f(a['lived_6h_flagged_6h_ahead_share'])}"
                  f" · fast, before {_f(a['fast_flagged_before_event_share'])}"
                  f" · never drained {_f(a['never_event_flagged_share'])}"
                  f" · healthy {_f(a['healthy_flagged_share'])}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True, default=str))


def _f(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
