"""``chainwatch demo``: the whole pipeline on a local broker, with a summary."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pipeline.cli.common import (
    add_check,
    add_common,
    load_settings,
    non_negative_int,
    positive_int,
    stop_on_signals,
)

HELP = """\
Start a local broker, stream a synthetic chain with one labelled campaign of each type into
Kafka, score it online, write alerts to chainwatch.alerts, keep them in an alert store
(chainwatch-data/demo/alerts.db, for `chainwatch alerts`) and an audit log, grade them
against the campaigns' ground truth, stop the broker and print a summary. Live progress goes
to stderr.

example:
  chainwatch demo --blocks 300 --seed 4242 --json
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline once on a local broker",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", type=positive_int, default=300,
                   help="blocks of synthetic chain to stream (default: 300)")
    p.add_argument("--seed", type=non_negative_int, default=4242,
                   help="seed of the synthetic world; same seed, same chain (default: 4242)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout instead of the summary")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--audit-store", metavar="PATH", default="chainwatch-data/demo/audit.db",
                   help="where the demo's audit log goes; each demo replaces it, keeping "
                        "its signing key (default: chainwatch-data/demo/audit.db)")
    p.add_argument("--alert-store", metavar="PATH", default="chainwatch-data/demo/alerts.db",
                   help="the SQLite file the demo's alerts go to; each demo replaces it "
                        "(default: chainwatch-data/demo/alerts.db)")
    add_common(p, bootstrap=False)
    add_check(p, lambda args: "--alert-store takes a file path (the demo replaces the file)"
              if "://" in args.alert_store else None)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from consumers.demo import run_demo

    settings = load_settings(args, **{"audit.store": args.audit_store,
                                      "alerts.store": args.alert_store})
    result = run_demo(settings, blocks=args.blocks, seed=args.seed,
                      progress=not args.quiet, stop=stop_on_signals())
    if args.json:
        print(json.dumps(result.to_json_dict()))
        return 0
    alerts = result.alerts_by_type
    shown = ", ".join(f"{k} {v}" for k, v in sorted(alerts.items())) or "none"
    lines = [
        f"chainwatch demo: seed {result.seed}, {result.blocks} blocks",
        f"  events produced  {result.events_produced:,} ({result.transactions:,} transactions,"
        f" {result.dex_events:,} DEX events)",
        f"  events scored    {result.events_scored:,} in {result.elapsed_s:.1f} s "
        f"({result.events_per_s:,.0f} events/s), {result.dead_lettered} dead-lettered",
        f"  alerts           {sum(alerts.values())}: {shown}",
        f"  campaigns        {len(result.campaigns)} injected: " + ", ".join(
            f"{c['type']} on {c['subject'][:10]}…" for c in result.campaigns),
        *(f"  {kind:<16} precision {_fmt(m['precision'])} · recall {_fmt(m['recall'])} · "
          f"median delay {_fmt(m['median_delay_blocks'])} blocks "
          f"({DELAY_WORDS.get(kind, 'from its start')})"
          for kind, m in sorted(result.evaluation.items())),
        f"  audit log        {result.audit['tree_size']:,} leaves in {result.audit['store']}"
        f", {'verified' if result.audit['verified'] else 'NOT VERIFIED'}; check it with "
        f"`chainwatch audit verify --store {result.audit['store']}`",
        f"  alert store      {result.alerts_stored:,} alerts in {result.alert_store}; try "
        f"`chainwatch alerts show {result.alert_id_to_try[:12]} --store {result.alert_store} "
        f"--audit-store {result.audit['store']}`" if result.alert_id_to_try else
        f"  alert store      {result.alerts_stored:,} alerts in {result.alert_store}",
        f"  broker           {result.bootstrap} (stopped)",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


DELAY_WORDS = {"pump_and_dump": "after the pump began", "rug_pull": "after the drain"}


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)
