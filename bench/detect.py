"""Detection quality and in-process scoring speed on the synthetic chain (not a test).

    python bench/detect.py                      # held-out seeds 100-119, difficulties 0.5 0.2 0.8
    python bench/detect.py --seeds 1-20         # the tuning seeds
    python bench/detect.py --json report.json   # also write every figure and hit list

For each difficulty and seed it builds ``SyntheticChain(SynthConfig(seed, blocks,
campaigns={all four types: rate per 1,000 blocks}))`` and feeds its records in block order
(each block's transactions, then its DEX events) through the scorer twice: through ONE
:class:`~pipeline.scoring.Scorer`, and split over 4 Scorers as the service partitions them
(transactions by murmur2(from_address) % 4, DEX events by murmur2(pool_address) % 4, as
kafka-python's default partitioner does). Delayed labels (a transaction is fraud when its
sender takes part in a campaign then) are released ``--label-delay`` blocks later, to the
sender's partition, for the supervised model's prequential ROC-AUC / PR-AUC.

It prints, per difficulty and mode, per alert type: campaigns, detected, alerts, precision,
recall, F1, false alerts per 10k events, median delays (from the campaign start, from its
onset — the pump, the hype —, and relative to the dump / drain), the share alerted before
the dump / drain and by the block after it; then the goals, and events/s of
``Scorer.process`` measured in this process (one scorer, every detector on; best of 3).
Matching rules: :mod:`pipeline.evaluation`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kafka.partitioner.default import murmur2  # noqa: E402

from pipeline.alerts import Alert  # noqa: E402
from pipeline.errors import RecordError  # noqa: E402
from pipeline.evaluation import (  # noqa: E402
    average_precision,
    crash_events,
    evaluate_events,
    evaluate_synthetic,
    merge_reports,
    roc_auc,
)
from pipeline.records import ChainRecord, DexEvent, Label, Transaction  # noqa: E402
from pipeline.scoring import Scorer  # noqa: E402
from producers.files import read_rows  # noqa: E402
from producers.formats import make_format  # noqa: E402
from producers.synth import SynthConfig, SyntheticChain  # noqa: E402

DATA = ROOT.parent / "shared" / "data"

TYPES = ("pump_and_dump", "rug_pull", "wash_trading", "anomalous_transfer")
PARTITIONS = 4
COLUMNS = ("campaigns", "detected", "alerts", "precision", "recall", "f1", "false_per_10k",
           "median_delay_from_start", "median_delay_from_onset", "median_delay_vs_move",
           "before_move_share", "by_move_plus_1_share")
HEADERS = ("camp", "det", "alerts", "prec", "recall", "f1", "fp/10k", "d_start", "d_onset",
           "d_move", "<move", "<=move+1")


def partition(key: str, partitions: int = PARTITIONS) -> int:
    """kafka-python's default partitioner: murmur2 of the key, positive, modulo."""
    hashed: int = murmur2(key.encode())
    return (hashed & 0x7FFFFFFF) % partitions


def chain_records(seed: int, difficulty: float, blocks: int, rate: float,
                  label_delay: int) -> tuple[list[ChainRecord], list[dict[str, Any]]]:
    """The chain's records in block order, with delayed labels released in stream time."""
    chain = SyntheticChain(SynthConfig(seed=seed, blocks=blocks, difficulty=difficulty,
                                       campaigns=dict.fromkeys(TYPES, rate)))
    truth = chain.truth
    windows: dict[str, list[tuple[int, int]]] = {}
    for campaign in truth:
        for address in campaign["participants"]:
            windows.setdefault(address, []).append((campaign["start_block"],
                                                    campaign["end_block"]))
    records: list[ChainRecord] = []
    pending: list[Label] = []
    for block in chain.blocks():
        while pending and pending[0].released_block <= block.number:
            records.append(pending.pop(0))
        for tx in block.transactions:
            fraud = any(s <= tx.block_number < e for s, e in windows.get(tx.from_address, []))
            pending.append(Label(subject=tx.item_id, label=int(fraud), source="synth",
                                 block_number=tx.block_number,
                                 released_block=tx.block_number + label_delay,
                                 partition_key=tx.from_address))
        records.extend(block.transactions)
        records.extend(block.dex_events)
    return records, truth


def _key(record: ChainRecord) -> str:
    if isinstance(record, DexEvent):
        return record.pool_address
    if isinstance(record, Label):
        return record.key
    return record.from_address


def score(records: list[ChainRecord], partitions: int) -> tuple[list[Alert], list[
        tuple[float, int]], int]:
    """Alerts, prequential (score, label) pairs and events scored, over ``partitions``."""
    scorers = [Scorer() for _ in range(partitions)]
    for scorer in scorers:  # record every (event-time score, label) test of the model
        scorer.transactions.supervised.test_log = []
    alerts: list[Alert] = []
    events = 0
    for offset, record in enumerate(records):
        p = partition(_key(record), partitions) if partitions > 1 else 0
        events += not isinstance(record, Label)
        alerts += scorers[p].process(record, {"topic": "bench", "partition": p,
                                              "offset": offset})
    pairs = [pair for s in scorers for pair in s.transactions.supervised.test_log or []]
    return alerts, pairs, events


def run_one(task: tuple[int, float, int, float, int]) -> dict[str, Any]:
    seed, difficulty, blocks, rate, label_delay = task
    records, truth = chain_records(seed, difficulty, blocks, rate, label_delay)
    out: dict[str, Any] = {"seed": seed, "difficulty": difficulty}
    for mode, partitions in (("single", 1), (f"split{PARTITIONS}", PARTITIONS)):
        alerts, pairs, events = score(records, partitions)
        out[mode] = {"report": evaluate_synthetic(alerts, truth, events), "events": events,
                     "pairs": pairs}
    return out


def throughput(seed: int, blocks: int, rate: float, repeat: int = 3) -> dict[str, float]:
    """events/s of Scorer.process, one scorer with every detector on (labels excluded)."""
    records, _ = chain_records(seed, 0.5, blocks, rate, label_delay=50)
    records = [r for r in records if not isinstance(r, Label)]
    best = float("inf")
    for _ in range(repeat):
        scorer = Scorer()
        source = {"topic": "bench", "partition": 0, "offset": 0}
        started = time.perf_counter()
        for record in records:
            scorer.process(record, source)
        best = min(best, time.perf_counter() - started)
    dex = sum(isinstance(r, DexEvent) for r in records)
    txs = sum(isinstance(r, Transaction) for r in records)
    return {"events": len(records), "transactions": txs, "dex_events": dex,
            "seconds": best, "events_per_s": len(records) / best}


def replay(name: str, path: Path) -> tuple[list[ChainRecord], list[Label]]:
    """Records and delayed labels of a replay format, skipping rows that do not map."""
    fmt = make_format(name)
    records: list[ChainRecord] = []
    labels: list[Label] = []
    for row in read_rows(fmt.files(path)):
        if row.error:
            continue
        try:
            mapped = fmt.map(row)
        except RecordError:
            continue
        if mapped is not None:
            records += mapped.records
            labels += mapped.labels
    return records, labels


def blte_figures(path: Path) -> dict[str, Any]:
    """Prequential ROC-AUC / PR-AUC of the supervised model on the labelled BLTE file, labels
    released 5,760 blocks (a day) after their transaction, as the replay producer does."""
    records, labels = replay("blte", path)
    labels.sort(key=lambda label: label.released_block)
    scorer, i = Scorer(), 0
    scorer.transactions.supervised.test_log = []
    source = {"topic": "blte", "partition": 0, "offset": 0}

    def release(upto: float) -> None:
        nonlocal i
        while i < len(labels) and labels[i].released_block <= upto:
            scorer.process(labels[i], source)
            i += 1

    alerts = 0
    for record in records:
        release(record.block_number)
        alerts += len(scorer.process(record, source))
    release(float("inf"))
    pairs = scorer.transactions.supervised.test_log or []
    return {"transactions": len(records), "labels": len(labels), "scored_labels": len(pairs),
            "positives": sum(y for _, y in pairs), "roc_auc": roc_auc(pairs),
            "pr_auc": average_precision(pairs), "anomaly_alerts": alerts}


def uniswap_figures(path: Path) -> dict[str, Any]:
    """Rug-pull alerts on the uniswap-v2-2021 replay against the liquidity drains and price
    crashes defined from its own reserves (pipeline.evaluation.crash_events)."""
    records, _ = replay("uniswap-v2", path)
    dex = [r for r in records if isinstance(r, DexEvent)]
    scorer, alerts = Scorer(), []
    source = {"topic": "uniswap", "partition": 0, "offset": 0}
    started = time.perf_counter()
    for record in dex:
        alerts += scorer.process(record, source)
    elapsed = time.perf_counter() - started
    crashes = crash_events(dex)
    by_type: dict[str, int] = {}
    for alert in alerts:
        by_type[alert.type] = by_type.get(alert.type, 0) + 1
    return {"events": len(dex), "events_per_s": len(dex) / elapsed,
            "alerts_by_type": by_type, "crash_events": len(crashes),
            "rug_pull_vs_crashes": evaluate_events(alerts, crashes),
            "rug_or_pump_vs_crashes": evaluate_events(alerts, crashes,
                                                      types=("rug_pull", "pump_and_dump"))}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def print_table(title: str, report: dict[str, Any]) -> None:
    print(f"\n{title}")
    print(f"  {'type':20s}" + "".join(f"{h:>9s}" for h in HEADERS))
    for kind in (*TYPES, *sorted(set(report) - set(TYPES))):
        if kind in report:
            row = report[kind]
            print(f"  {kind:20s}" + "".join(f"{_fmt(row[c]):>9s}" for c in COLUMNS))


def goals(report: dict[str, Any]) -> str:
    pump, rug = report.get("pump_and_dump", {}), report.get("rug_pull", {})

    def at_least(key: str, bound: float) -> bool:
        value = pump.get(key)
        return value is not None and value >= bound

    def below(key: str, bound: float) -> bool:
        value = pump.get(key)
        return value is not None and value < bound

    ok_pump = (at_least("recall", 0.95) and at_least("precision", 0.95)
               and below("median_delay_from_onset", 10.5) and below("median_delay_vs_move", 0))
    return (f"goals: pump-and-dump recall>=0.95 & precision>=0.95 & median onset delay<=10 "
            f"& before the dump: {'MET' if ok_pump else 'NOT MET'} "
            f"(before-dump share {_fmt(pump.get('before_move_share'))}); rug pulls alerted "
            f"by drain+1: {_fmt(rug.get('by_move_plus_1_share'))} of detected, recall "
            f"{_fmt(rug.get('recall'))}")


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds += list(range(int(low), int(high or low) + 1))
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="100-119", help="e.g. 100-119 or 1-5,9")
    parser.add_argument("--difficulties", default="0.5,0.2,0.8")
    parser.add_argument("--blocks", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5.0,
                        help="campaigns of each type per 1,000 blocks")
    parser.add_argument("--label-delay", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write all figures here")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--no-replays", action="store_true",
                        help="skip the blte and uniswap-v2 replays of ../shared/data")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    difficulties = [float(d) for d in args.difficulties.split(",")]
    tasks = [(s, d, args.blocks, args.rate, args.label_delay)
             for d in difficulties for s in seeds]
    started = time.time()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(run_one, tasks))
    summary: dict[str, Any] = {"seeds": seeds, "blocks": args.blocks, "rate": args.rate,
                               "results": {}}
    print(f"seeds {args.seeds}, {args.blocks} blocks each, {args.rate:g} campaigns of each "
          f"type per 1,000 blocks ({time.time() - started:.0f} s)")
    for d in difficulties:
        for mode in ("single", f"split{PARTITIONS}"):
            runs = [r[mode] for r in results if r["difficulty"] == d]
            events = sum(r["events"] for r in runs)
            merged = merge_reports([r["report"] for r in runs], events)
            pairs = [p for r in runs for p in r["pairs"]]
            auc, ap = roc_auc(pairs), average_precision(pairs)
            print_table(f"difficulty {d:g} · {mode} · {events:,} events", merged)
            print(f"  {goals(merged)}")
            print(f"  supervised (delayed labels, prequential): ROC-AUC {_fmt(auc)}, "
                  f"PR-AUC {_fmt(ap)} on {len(pairs):,} labels "
                  f"({sum(y for _, y in pairs):,} positive)")
            summary["results"][f"{d:g}/{mode}"] = {"events": events, "report": merged,
                                                   "roc_auc": auc, "pr_auc": ap}
    if not args.no_throughput:
        speed = throughput(seeds[0], args.blocks, args.rate)
        summary["throughput"] = speed
        print(f"\nScorer.process in-process: {speed['events_per_s']:,.0f} events/s "
              f"({speed['events']:,} events: {speed['transactions']:,} transactions, "
              f"{speed['dex_events']:,} DEX events; best of 3, every detector on)")
    if not args.no_replays:
        blte_path = DATA / "blte-ethereum-scam-tx" / "transactions.csv"
        if blte_path.is_file():
            blte = summary["blte"] = blte_figures(blte_path)
            print(f"\nblte replay (real labels, never tuned on): supervised prequential ROC-AUC "
                  f"{_fmt(blte['roc_auc'])}, PR-AUC {_fmt(blte['pr_auc'])} on "
                  f"{blte['scored_labels']:,} labels ({blte['positives']:,} positive); "
                  f"{blte['anomaly_alerts']} anomaly alerts on {blte['transactions']:,} "
                  f"transactions")
        uniswap_path = DATA / "uniswap-v2-2021"
        if uniswap_path.is_dir():
            uni = summary["uniswap"] = uniswap_figures(uniswap_path)
            rug = uni["rug_pull_vs_crashes"]
            print(f"uniswap-v2 replay (never tuned on): {uni['events']:,} events at "
                  f"{uni['events_per_s']:,.0f}/s, alerts {uni['alerts_by_type']}; "
                  f"{uni['crash_events']} drains/crashes (>=90 % from peak, no recovery) in "
                  f"{rug['pools']} pools; rug_pull alerts vs them: precision "
                  f"{_fmt(rug['precision'])}, recall {_fmt(rug['recall'])}, median delay "
                  f"{_fmt(rug['median_delay_vs_event'])} blocks")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
