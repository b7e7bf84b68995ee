"""The rug-risk model on the real uniswap-v2-2021 replay, in process (not a test).

    python bench/rug_risk.py                          # ../shared/data/uniswap-v2-2021
    python bench/rug_risk.py --thresholds 0.9,0.95,0.97 --json out.json

Replays every pool event of the dataset in chain order through 4 Scorers partitioned by
pool as the service partitions them (murmur2(pool_address) % 4), logs the ``rug_risk`` rule's
score at every event, and grades it with :mod:`pipeline.risk_evaluation` on both halves of
the pools (``tune``: even last byte, ``report``: odd): ROC-AUC / PR-AUC at pool ages and
before the event, and, for each threshold, what alerting at it would give (a pool's first
alert is its first score at or above the threshold: the rule's cool-down only spaces later
ones). Choose the threshold on ``tune``; read the figures on ``report``. The same figures
come from ``chainwatch evaluate uniswap-v2`` through a broker, for the configured threshold.
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

from pipeline.errors import RecordError  # noqa: E402
from pipeline.records import DexEvent  # noqa: E402
from pipeline.risk_evaluation import HALVES, evaluate_risk, pool_outcomes  # noqa: E402
from pipeline.scoring import Scorer  # noqa: E402
from producers.files import read_rows  # noqa: E402
from producers.formats import make_format  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "uniswap-v2-2021"
PARTITIONS = 4


def replay(path: Path) -> list[DexEvent]:
    fmt = make_format("uniswap-v2")
    events: list[DexEvent] = []
    for row in read_rows(fmt.files(path)):
        if row.error:
            continue
        try:
            mapped = fmt.map(row)
        except RecordError:
            continue
        if mapped is not None:
            events += [r for r in mapped.records if isinstance(r, DexEvent)]
    return events


def score(events: list[DexEvent]) -> tuple[list[tuple[str, int, float]], float]:
    """The rug_risk score log of every event, and the events per second."""
    scorers = [Scorer() for _ in range(PARTITIONS)]
    logs: list[list[tuple[str, int, float]]] = []
    for scorer in scorers:
        rule = next(r for r in scorer.rules if r.name == "rug_risk")
        rule.score_log = []
        logs.append(rule.score_log)
    source = {"topic": "uniswap", "partition": 0, "offset": 0}
    started = time.perf_counter()
    for ev in events:
        part = (murmur2(ev.pool_address.encode()) & 0x7FFFFFFF) % PARTITIONS
        scorers[part].process(ev, source)
    elapsed = time.perf_counter() - started
    merged = sorted((entry for log in logs for entry in log), key=lambda e: e[1])
    return merged, len(events) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", type=Path, default=DATA)
    parser.add_argument("--thresholds", default="0.8,0.9,0.95,0.97,0.99")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")]
    events = replay(args.path)
    healthy = [line.split(",")[0].strip().lower()
               for line in (args.path / "healthy_tokens.csv").read_text().splitlines()[1:]]
    outcomes = pool_outcomes(events, healthy)
    log, rate = score(events)
    end = events[-1].block_number
    print(f"{len(events):,} events, {rate:,.0f} events/s; {len(log):,} risk scores")
    report: dict[str, Any] = {"events": len(events), "events_per_s": rate, "thresholds": {}}
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
            flagged = {k: _f(v) for k, v in a.items() if isinstance(v, float | int | None)
                       and k != "lead_times"}
            print(f"  {half:7s} ROC by age {ages} | before event {before}\n"
                  f"          {flagged}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True, default=str))


def _f(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
