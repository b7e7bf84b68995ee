"""``chainwatch evaluate``: grade detection on a labelled source, through the real pipeline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pipeline.cli.common import (
    add_check,
    add_common,
    fraction,
    load_settings,
    non_negative_int,
    output_directory,
    positive_int,
    stop_on_signals,
)

HELP = """\
Run a labelled source through a broker and the scorer service, compare the alerts with the
ground truth, and write a report directory: summary.json, plots and report.html.

sources:
  synth        a synthetic chain with every campaign type; per type precision, recall, F1,
               detection delay in blocks, false alerts per 10k events, campaign hit list
  blte PATH    the BLTE labelled transactions; prequential ROC-AUC / PR-AUC of the
               supervised model learning from delayed labels
  uniswap-v2 PATH  the Uniswap-V2 2021 pool logs; rug-pull alerts against liquidity drains
               and price crashes found in the data (>= 90 % below the running peak, no
               recovery above 20 % of it)
  pumps PATH   the pump-telegram-binance folder (trades.parquet, pumps.csv): trades replayed
               and scored at once, the announcements as delayed labels; per pump detected,
               delay from the first pump trade (s), before the price peak; false alerts per
               market-day in the 48 h lead-ins; La Morgia chunk P/R/F1 at 5, 15, 25 s;
               alerts.jsonl; tune and report halves

A local broker is started for the run unless --bootstrap is given.

examples:
  chainwatch evaluate synth --seed 100 --blocks 3000 --out reports/synth-100
  chainwatch evaluate blte ../shared/data/blte-ethereum-scam-tx/transactions.csv --out reports/blte
  chainwatch evaluate uniswap-v2 ../shared/data/uniswap-v2-2021 --out reports/uniswap
  chainwatch evaluate pumps ../shared/data/pump-telegram-binance --out reports/pumps
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="grade detection on a labelled source",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", choices=("synth", "blte", "uniswap-v2", "pumps"), metavar="SOURCE",
                   help="synth | blte | uniswap-v2 | pumps")
    p.add_argument("path", nargs="?", type=Path, metavar="PATH",
                   help="the dataset (blte, uniswap-v2, pumps; synth takes none)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="report directory (created if missing)")
    p.add_argument("--seed", type=non_negative_int, default=100, help="synth seed (100)")
    p.add_argument("--blocks", type=positive_int, default=3000, help="synth blocks (3000)")
    p.add_argument("--difficulty", type=fraction, default=0.5, help="synth difficulty (0.5)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="replay at most N rows")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_common(p)
    add_check(p, dataset_path)
    p.set_defaults(run=run)


def dataset_path(args: argparse.Namespace) -> str | None:
    """blte, uniswap-v2 and pumps read a dataset PATH; synth makes its own chain and takes
    none; pumps needs the folder with trades.parquet and pumps.csv."""
    if args.source == "synth" and args.path is not None:
        return (f"synth takes no PATH (it makes its own chain); drop {args.path}, or "
                "evaluate blte, uniswap-v2 or pumps on it")
    if args.source != "synth" and args.path is None:
        return f"{args.source} needs the dataset PATH"
    if args.source == "pumps":
        missing = [name for name in ("trades.parquet", "pumps.csv")
                   if not (args.path / name).is_file()]
        if missing:
            return (f"pumps needs a folder with trades.parquet and pumps.csv; {args.path} "
                    f"has no {' or '.join(missing)}")
    return None


def run(args: argparse.Namespace) -> int:
    from consumers.evaluate import EvalSource, run_evaluation
    from producers.formats import make_format

    output_directory("--out", args.out)  # before the run, not in a traceback after it
    if args.source != "synth":  # a wrong path fails here, in one line
        make_format("trades" if args.source == "pumps" else args.source).files(args.path)
    source = EvalSource(args.source, args.path, seed=args.seed, blocks=args.blocks,
                        difficulty=args.difficulty, limit=args.limit)
    summary = run_evaluation(load_settings(args), source, args.out,
                             bootstrap=args.bootstrap, stop=stop_on_signals())
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "detail"}))
        return 0
    print(f"chainwatch evaluate {args.source}: {summary['events']:,} events, report in "
          f"{args.out / 'report.html'}")
    for kind, m in sorted(summary.get("by_type", {}).items()):
        print(f"  {kind:<20} " + " · ".join(
            f"{k} {_fmt(m.get(k))}" for k in ("precision", "recall", "f1",
                                              "median_delay_blocks", "median_delay_vs_move")
            if m.get(k) is not None))
    if "big_pumps" in summary.get("report", {}):
        for half in ("tune", "report"):
            big, false = summary[half]["big_pumps"], summary[half]["false_alerts"]
            chunk = summary[half]["chunks"]["25"]
            print(f"  pumps ({half}): big pumps {big['detected']}/{big['pumps']} detected · "
                  f"median delay {_fmt(big['median_delay_s'])} s · before peak "
                  f"{_fmt(big['before_peak_share'])} · false alerts per 48 h lead-in "
                  f"{_fmt(false['per_48h_lead_in'])} · chunk F1 at 25 s {_fmt(chunk['f1'])}")
        print(f"  end to end: {summary['end_to_end_trades_per_s']:,} trades/s")
    if "supervised" in summary:
        s = summary["supervised"]
        print(f"  supervised: ROC-AUC {_fmt(s['roc_auc'])} · PR-AUC {_fmt(s['pr_auc'])} over "
              f"{s['labels_tested']:,} labels ({s['positives']:,} positive)")
    return 0


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
