"""The pump detector on the real pump-telegram-binance trades, in process (not a test).

    python bench/pumps.py                                  # ../shared/data/pump-telegram-binance
    python bench/pumps.py --grid min_surge=8,12,16,20 min_rise=0.03,0.05
    python bench/pumps.py --rule '{"params": {"min_positives": 1000000}}'   # no model

Replays every trade in time order through 4 Scorers partitioned by stream key as the service
partitions them (murmur2(key) % 4), each announcement's label handed to its partition's
Scorer up front (applied once its trades pass ``announced_at`` + 1 h, as ``chainwatch
evaluate pumps`` does), keeps every ``pump_and_dump`` score as chunk maxima and its alerts,
and grades them with :mod:`pipeline.pump_evaluation` on the ``tune`` and ``report`` halves.
``--grid`` runs every combination of detector parameters and prints one line per setting and
half: choose on ``tune``, read ``report``. It also prints the in-process rate (wire decode and
scoring, trades/s) of the first setting. The same figures, for the configured rule, come from
``chainwatch evaluate pumps`` through a broker.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
from kafka.partitioner.default import murmur2  # noqa: E402

from pipeline import codec  # noqa: E402
from pipeline.pump_evaluation import (  # noqa: E402
    CHUNK_SIZES_S,
    add_chunk_scores,
    evaluate_pumps,
    split_pumps,
)
from pipeline.records import Trade  # noqa: E402
from pipeline.rules import RuleSet  # noqa: E402
from pipeline.scoring import Scorer  # noqa: E402
from producers.formats import PUMPS_FILE, load_pump_labels  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pump-telegram-binance"
PARTITIONS = 4
LABEL_DELAY_S = 3600
RULE = "pump_and_dump"


def wire_trades(trades: pd.DataFrame) -> list[bytes]:
    """The trades as the replay puts them on market.trades (stream = pump_id)."""
    columns = [trades[c].tolist() for c in ("pump_id", "venue", "market", "timestamp_ms",
                                             "side", "price", "amount", "quote_volume")]
    return [codec.encode(Trade(venue=v, market=m, side=s, price=float(p), amount=float(a),
                               quote_volume=float(q), timestamp=int(ms), stream=pid))
            for pid, v, m, ms, s, p, a, q in zip(*columns, strict=True)]


def run(wire: list[bytes], path: Path, pumps: pd.DataFrame, trades: pd.DataFrame,
        rule: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Score the wire trades with ``rule`` as the pump_and_dump rule; (graded summary,
    trades/s of decoding and scoring)."""
    rules = RuleSet.load({RULE: rule} if rule else None)
    scorers = [Scorer(rules=rules) for _ in range(PARTITIONS)]
    logged = []
    for scorer in scorers:
        pump_rule = next(r for r in scorer.trades.rules if r.name == RULE)
        pump_rule.score_log = []
        logged.append(pump_rule)
    for label in load_pump_labels(path / PUMPS_FILE, LABEL_DELAY_S):  # as the replay reads them
        scorers[_partition(label.key)].process(label, {})
    alerts: list[tuple[str, int, float, str]] = []
    chunks: dict[int, dict[tuple[str, int], float]] = {size: {} for size in CHUNK_SIZES_S}
    started = time.perf_counter()
    for offset, data in enumerate(wire):
        trade = codec.decode(data, (Trade.record_type,))
        assert isinstance(trade, Trade)
        p = _partition(trade.key)
        for alert in scorers[p].process(trade, {"topic": "market.trades", "partition": p,
                                                "offset": offset}):
            if alert.type == RULE:
                alerts.append((alert.subject, int(alert.evidence["timestamp_ms"]), alert.score,
                               alert.alert_id))
        log = logged[p].score_log
        assert log is not None
        add_chunk_scores(chunks, log)
        log.clear()
    rate = len(wire) / (time.perf_counter() - started)
    spec = next(s for s in rules.specs if s.name == RULE)
    tune, _ = split_pumps(pumps)
    return evaluate_pumps(trades, pumps, alerts, chunks, spec.threshold or 0.5, tune), rate


def _partition(key: str) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def line(name: str, half: dict[str, Any]) -> str:
    big, false, chunks = half["big_pumps"], half["false_alerts"], half["chunks"]
    f1 = " / ".join(f"{chunks[str(s)]['f1']:.3f}" for s in CHUNK_SIZES_S)
    return (f"{name:<48} big {big['detected']}/{big['pumps']} · median "
            f"{big['median_delay_s']:.1f} s · before peak {big['before_peak']} · false "
            f"{false['false_alerts']} ({false['per_48h_lead_in']:.2f} per 48 h) · chunk F1 "
            f"5/15/25 s {f1}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=DATA)
    parser.add_argument("--rule", default="{}", help="the pump_and_dump rule table, as JSON")
    parser.add_argument("--grid", nargs="*", default=[], metavar="PARAM=V1,V2",
                        help="detector parameters to try in every combination")
    parser.add_argument("--json", type=Path, help="write every summary here")
    args = parser.parse_args()
    base = json.loads(args.rule)
    trades = pd.read_parquet(args.path / "trades.parquet")
    pumps = pd.read_csv(args.path / "pumps.csv")
    wire = wire_trades(trades)
    axes = [(name, [float(v) for v in values.split(",")])
            for name, values in (item.split("=", 1) for item in args.grid)]
    settings = [dict(zip([n for n, _ in axes], combo, strict=True))
                for combo in itertools.product(*(v for _, v in axes))] or [{}]
    out = []
    for i, params in enumerate(settings):
        rule = dict(base)
        if params or base:
            rule = {"class": "pipeline.detectors:PumpBurst", "on": "trades",
                    "threshold": 0.5, "cooldown_blocks": 100, "learn": "labels",
                    "drift": False} | base
            rule["params"] = dict(base.get("params", {})) | params
        summary, rate = run(wire, args.path, pumps, trades, rule)
        if i == 0:
            print(f"in process: {rate:,.0f} trades/s (wire decode + every rule), "
                  f"{PARTITIONS} scorers")
        name = ", ".join(f"{k}={v:g}" for k, v in params.items()) or \
            (json.dumps(base.get("params", base)) if base else "defaults")
        for half in ("tune", "report"):
            print(line(f"{half:<6} {name}", summary[half]))
        out.append({"params": params, "summary": summary})
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
