"""``chainwatch score``: the scorer service, one member of a consumer group."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from pipeline.cli.common import (
    add_common,
    add_metrics_port,
    load_settings,
    positive_int,
    positive_number,
    serving,
    stop_on_signals,
)

HELP = """\
Consume chain.transactions, chain.dex and chainwatch.labels as a member of a consumer group,
score every event online, and write alerts to chainwatch.alerts. Start more members with the
same --group to scale out: partitions (and their state) are split between them, and a
stopped member's partitions move to the others, restored from their checkpoints.

Checkpoints (per partition: models, feature windows and the offsets they cover) go to
--checkpoints, a directory or s3://bucket/prefix (settings storage.* for the S3 endpoint and
keys), authenticated with the key in --checkpoint-key (made on first use): every scorer of a
group needs the same key file. A checkpoint written for another group, other topics or
another cluster is refused, and the scorer stops before reading anything. Stops cleanly on
Ctrl-C or SIGTERM, after a final checkpoint.

With --metrics-port, serves /metrics (Prometheus), /healthz (the loop is alive) and /readyz
(partitions assigned, each within 1000 records of its end).

examples:
  chainwatch score --bootstrap 127.0.0.1:9092
  chainwatch score --group fraud-eu --checkpoints s3://chainwatch/checkpoints
  chainwatch score --until-caught-up --json     # score what is there, then exit
  chainwatch score --metrics-port 9108 --log-format json   # as in a container
  chainwatch score --verify-checkpoints --audit-url http://auditor:9108   # proofs over HTTP
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("score", help="run the scorer service (a consumer-group member)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group", metavar="G", help="consumer group (default: chainwatch-scorer)")
    p.add_argument("--checkpoints", metavar="URI",
                   help="checkpoint store: a directory or s3://bucket/prefix "
                        "(default: chainwatch-data/checkpoints)")
    p.add_argument("--checkpoint-key", metavar="FILE",
                   help="the key that authenticates checkpoints, made (mode 0600) if missing; "
                        "the same file for every scorer of the group (setting "
                        "checkpoint_key_file, default: chainwatch-data/checkpoint.key)")
    p.add_argument("--checkpoint-every", type=positive_int, default=50_000, metavar="N",
                   help="checkpoint a partition after N records (default 50000)")
    p.add_argument("--checkpoint-interval", type=float, default=30.0, metavar="S",
                   help="…or after S seconds with new records (default 30)")
    p.add_argument("--session-timeout", type=positive_number("seconds"), default=10.0,
                   metavar="S",
                   help="how long the group waits for a silent member (a crashed scorer) "
                        "before its partitions move to another (default 10); lower fails "
                        "over sooner, but a stall longer than S then counts as a crash; "
                        "brokers set a floor (Apache Kafka: group.min.session.timeout.ms, "
                        "6 s by default)")
    p.add_argument("--verify-checkpoints", action="store_true", default=None,
                   help="restore only checkpoints whose digest the audit log holds, proven "
                        "against its signed head (setting audit.verify_checkpoints; the log "
                        "and key: audit.store, audit.public_key)")
    p.add_argument("--audit-url", type=audit_url, metavar="URL",
                   help="with --verify-checkpoints, ask the auditor at URL (`chainwatch audit "
                        "serve --metrics-port`, e.g. http://auditor:9108) for the proofs "
                        "instead of opening audit.store; they are checked here with "
                        "audit.public_key (setting audit.url, CHAINWATCH_AUDIT_URL)")
    p.add_argument("--until-caught-up", action="store_true",
                   help="exit once every assigned partition is read to its end")
    p.add_argument("--json", action="store_true", help="print a JSON summary on exit")
    add_metrics_port(p)
    add_common(p)
    p.set_defaults(run=run)


def audit_url(text: str) -> str:
    """An argparse type: the auditor's http(s):// URL."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError("give the auditor's URL as http(s)://HOST[:PORT], e.g. "
                                         "http://auditor:9108")
    return text.strip()


def run(args: argparse.Namespace) -> int:
    from consumers.scorer import ScorerService
    from pipeline.audit.remote import shown_url
    from pipeline.logs import announce

    if args.checkpoint_interval <= 0:
        print("chainwatch score: error: --checkpoint-interval must be above 0 seconds",
              file=sys.stderr)
        return 2
    settings = load_settings(args, consumer_group=args.group, checkpoint_uri=args.checkpoints,
                             checkpoint_key_file=args.checkpoint_key,
                             **{"audit.verify_checkpoints": args.verify_checkpoints,
                                "audit.url": args.audit_url})
    if args.audit_url and not settings.audit.verify_checkpoints:
        print("chainwatch score: error: --audit-url is where --verify-checkpoints asks; add "
              "--verify-checkpoints (or set audit.verify_checkpoints)", file=sys.stderr)
        return 2
    session_ms = max(int(args.session_timeout * 1000), 1000)  # heartbeats 3 to a session
    service = ScorerService(settings, stop_on_signals(), checkpoint_every=args.checkpoint_every,
                            checkpoint_interval_s=args.checkpoint_interval,
                            session_timeout_ms=session_ms,
                            heartbeat_interval_ms=max(session_ms // 3, 100))
    store = service.prepare()  # key, audit check and store: one-line errors before any work
    started = time.monotonic()
    with serving(settings, service, "chainwatch score"):
        announce(f"chainwatch score: group {settings.consumer_group} on "
                 f"{settings.bootstrap_servers}; Ctrl-C to stop")
        audit = ""
        if settings.audit.verify_checkpoints:
            audit = (f" and the auditor at {shown_url(settings.audit.url)}"
                     if settings.audit.url else " and the audit log")
        announce(f"chainwatch score: checkpoints in {store.uri}, authenticated with "
                 f"{settings.checkpoint_key_file}{audit}")
        stats = service.run(input_finished=(lambda: True) if args.until_caught_up else None)
    summary = {"consumed": stats.consumed, "scored": stats.scored,
               "dead_lettered": stats.dead_lettered,
               "alerts_by_type": dict(sorted(stats.alerts_by_type.items())),
               "elapsed_s": round(time.monotonic() - started, 3),
               "checkpoints_written": service.tasks.checkpoints_written if service.tasks else 0}
    if args.json:
        print(json.dumps(summary))
    else:
        announce(f"chainwatch score: consumed {stats.consumed:,}, dead-lettered "
                 f"{stats.dead_lettered:,}, alerts {sum(stats.alerts_by_type.values()):,}")
    return 0

