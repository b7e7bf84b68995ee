"""Feature-group ablation of the rug-risk model on the real uniswap-v2-2021 replay.

    nice -n 5 python bench/rug_risk_ablation.py                 # ../shared/data/uniswap-v2-2021
    nice -n 5 python bench/rug_risk_ablation.py --json ablation.json
    nice -n 5 python bench/rug_risk_ablation.py --estimator logistic   # and its weights

Replays the dataset once (:func:`bench.rug_risk.replay`, :func:`pipeline.risk_evaluation.
pool_outcomes`), then scores it with :func:`bench.rug_risk.score` once with every feature of
:data:`~pipeline.detectors.RISK_FEATURES` and once with each feature group of :data:`GROUPS`
left out (``{"params": {"features": [...]}}``, the ``[detectors.rug_risk]`` table). Prints,
per run, the ROC-AUC at pool ages 1h/6h/24h and 1h/6h/24h before the event on the ``tune``
and ``report`` halves, with the change against the full model (negative: the group helped);
for the logistic regression also the full model's weights at the end of the replay (inputs
are standardised, so they compare), |weight| averaged over the 4 partitions' models, largest
first (a forest has none: the table is its importance). Six replays of a few minutes each.
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

from bench.rug_risk import DATA, PARTITIONS, replay, score  # noqa: E402
from consumers.evaluate import read_healthy_tokens  # noqa: E402
from pipeline.detectors import RISK_FEATURES, PoolRisk  # noqa: E402
from pipeline.detectors.risk import ESTIMATORS  # noqa: E402
from pipeline.risk_evaluation import AGES, evaluate_risk, pool_outcomes  # noqa: E402
from pipeline.rules import Rule  # noqa: E402

GROUPS: dict[str, tuple[str, ...]] = {
    # who holds the LP tokens: holders, creator's and top holder's shares, locks, mints, burns
    "LP holders": tuple(f for f in RISK_FEATURES if f.startswith("lp_")),
    # how much WETH the pool holds, held at its peak and at its opening, and how it moved
    "liquidity path": ("liquidity_weth", "liquidity_peak_weth", "liquidity_growth",
                       "drawdown", "first_liquidity_weth"),
    # the price against the first and the peak, how long ago the peak was, how it moves
    "price path": ("price_vs_first", "price_drop_peak", "price_peak_age", "volatility_50",
                   "return_20"),
    # how much it trades and who sells: trade and sync counts, sell shares, gap between syncs
    "trading activity": ("trades_20", "syncs_270", "syncs_total", "sell_share",
                         "max_sell_share", "sync_gap"),
    # how old the pool is and how long since liquidity was last added
    "age and mints": ("age", "blocks_since_mint"),
    # the LP creator's other pools, and how many of them were rugged
    "creator history": ("creator_pools", "creator_rugged"),
}
FULL = "none (full model)"
HALVES = ("tune", "report")
COLUMNS = [f"{kind} {age}" for kind in ("age", "before") for age in AGES]


def aucs(summary: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """ROC-AUC per half and column ("age 1h" ... "before 24h") of an evaluation summary."""
    return {half: {f"{kind} {age}": summary[half][key][age]["roc_auc"]
                   for kind, key in (("age", "by_age"), ("before", "before_event"))
                   for age in AGES}
            for half in HALVES}


def weights(rules: list[Rule]) -> dict[str, float]:
    """Each feature's |logistic weight| averaged over the partitions' models, largest first."""
    total = dict.fromkeys(RISK_FEATURES, 0.0)
    for rule in rules:
        assert isinstance(rule.detector, PoolRisk)
        learner = list(rule.detector.model.steps.values())[-1]
        for feature, w in learner.weights.items():
            total[feature] += abs(float(w)) / len(rules)
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", type=Path, default=DATA)
    parser.add_argument("--json", type=Path, help="also write the table and weights here")
    parser.add_argument("--estimator", choices=ESTIMATORS, default=PoolRisk().estimator,
                        help="the rug_risk model to ablate (default: the default model's)")
    args = parser.parse_args()
    missing = set(RISK_FEATURES) - {f for group in GROUPS.values() for f in group}
    assert not missing, f"features in no group: {sorted(missing)}"
    started = time.perf_counter()
    events = replay(args.path)
    outcomes = pool_outcomes(events, read_healthy_tokens(args.path))
    end = events[-1].block_number
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    full_weights: dict[str, float] = {}
    for removed in (FULL, *GROUPS):
        features = [f for f in RISK_FEATURES if f not in GROUPS.get(removed, ())]
        log, rate, rules = score(events, {"params": {"features": features,
                                                     "estimator": args.estimator}})
        table[removed] = aucs(evaluate_risk(outcomes, log, [], end).summary)
        if removed == FULL and args.estimator == "logistic":
            full_weights = weights(rules)
        print(f"removed {removed}: {len(features)} features, {rate:,.0f} events/s, "
              f"{time.perf_counter() - started:,.0f} s so far", file=sys.stderr, flush=True)
    print(f"rug_risk estimator: {args.estimator}")
    print_table(table)
    if full_weights:
        print("\nfull model: |logistic weight| at the end of the replay, mean of the "
              f"{PARTITIONS} partitions (standardised inputs)")
        for feature, w in full_weights.items():
            print(f"  {feature:22s} {w:.3f}")
    print(f"\n{len(events):,} events, {len(GROUPS) + 1} runs, "
          f"{time.perf_counter() - started:,.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"estimator": args.estimator, "roc_auc": table,
                                         "weights": full_weights,
                                         "groups": GROUPS}, indent=2))


def print_table(table: dict[str, dict[str, dict[str, float | None]]]) -> None:
    """ROC-AUC of every run per half, and its change against the full model."""
    full = table[FULL]
    for half in HALVES:
        print(f"\n{half} half: ROC-AUC (change against the full model)")
        print(f"{'group removed':20s} " + " ".join(f"{c:>16s}" for c in COLUMNS))
        for removed, halves in table.items():
            cells = []
            for column in COLUMNS:
                value, base = halves[half][column], full[half][column]
                delta = "" if removed == FULL or value is None or base is None \
                    else f" ({value - base:+.3f})"
                cells.append(f"{_f(value)}{delta}".rjust(16))
            print(f"{removed:20s} " + " ".join(cells))


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
