"""``chainwatch alerts``: the alert store's sink service, and the analyst's commands on it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.cli.common import (
    add_check,
    add_common,
    add_metrics_port,
    load_settings,
    output_file,
    positive_int,
    positive_number,
    serving,
    stop_on_signals,
)
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.alert_store import AlertStore, StoredAlert

HELP = """\
The alert store keeps every alert of chainwatch.alerts with its analyst status (new,
acknowledged, confirmed, false_positive) and note: a SQLite file by default, or PostgreSQL
when --store (setting alerts.store) is a postgresql:// URL. `alerts sink` fills it; the
other commands read it, and `ack` records a verdict (and publishes it as a label).

examples:
  chainwatch alerts sink --bootstrap 127.0.0.1:9092          # the sink service
  chainwatch alerts list --type pump_and_dump --status new   # newest first, 50 at most
  chainwatch alerts list --since 2024-01-01T00:00:00Z --json # one JSON object a line
  chainwatch alerts tail -f                                  # follow new alerts
  chainwatch alerts show 3f2a91                              # evidence, history, audit proof
  chainwatch alerts export --format csv --out alerts.csv
  chainwatch alerts ack 3f2a91 --status confirmed --note "drained 40 ETH"
  CHAINWATCH_NOTIFY_WEBHOOK_URL=https://hooks.slack.com/services/... \
      chainwatch alerts notify --format slack --min-severity high   # alerts to a webhook
"""
STORE_HELP = ("the alert store: a SQLite path, sqlite:///PATH or postgresql://USER@HOST/DB "
              "(default: setting alerts.store, chainwatch-data/alerts.db)")
SEVERITIES = ("info", "low", "medium", "high", "critical")
NOTIFY_FORMATS = ("json", "slack")
ACK_STATUSES = ("acknowledged", "confirmed", "false_positive")
STATUSES = ("new", *ACK_STATUSES)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("alerts", help="the alert store: sink, list, tail, show, export, ack; "
                       "notify",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = p.add_subparsers(dest="alerts_command", metavar="ALERTS_COMMAND",
                            parser_class=type(p))
    cmds.required = True

    s = cmds.add_parser("sink", help="consume chainwatch.alerts into the store",
                        description="Read every partition of chainwatch.alerts into the alert "
                        "store, each polled batch in one transaction with the offsets it "
                        "covers: a restart (even after SIGKILL) loses and duplicates nothing. "
                        "Messages that are not alerts go to chainwatch.dlq. Stops on Ctrl-C "
                        "or SIGTERM. With --metrics-port, serves /metrics, /healthz, /readyz.")
    s.add_argument("--store", metavar="URL|PATH", help=STORE_HELP)
    s.add_argument("--until-caught-up", action="store_true",
                   help="exit once every partition is read to its end")
    s.add_argument("--json", action="store_true", help="print a JSON summary on exit")
    add_metrics_port(s)
    add_common(s)
    s.set_defaults(run=run_sink)

    li = cmds.add_parser("list", help="alerts matching filters, newest first")
    _filters(li)
    li.add_argument("--limit", type=positive_int, default=50, metavar="N",
                    help="at most N alerts (default 50)")
    li.add_argument("--json", action="store_true",
                    help="one alert per line as JSON, with status, note, seq, stored_at")
    _store_args(li)
    li.set_defaults(run=run_list)

    t = cmds.add_parser("tail", help="the newest alerts; -f follows new ones")
    t.add_argument("-n", "--lines", type=positive_int, default=10, metavar="N",
                   help="how many of the newest to print first (default 10)")
    t.add_argument("-f", "--follow", action="store_true",
                   help="keep printing alerts as they are stored, until Ctrl-C")
    t.add_argument("--interval", type=positive_number("seconds"), default=1.0, metavar="S",
                   help="with -f, look for new alerts every S seconds (default 1)")
    t.add_argument("--json", action="store_true", help="one alert per line as JSON")
    _store_args(t)
    t.set_defaults(run=run_tail)

    sh = cmds.add_parser("show", help="one alert: evidence, records, history, audit proof")
    sh.add_argument("alert_id", metavar="ID", help="an alert id, or its first characters")
    sh.add_argument("--audit-store", metavar="PATH",
                    help="the audit log to prove it against (default: setting audit.store)")
    sh.add_argument("--public-key", metavar="KEY",
                    help="the audit log's public key (default: setting audit.public_key, "
                         "else the .pub file beside its private key)")
    sh.add_argument("--json", action="store_true", help="print it as one JSON object")
    _store_args(sh)
    sh.set_defaults(run=run_show)

    e = cmds.add_parser("export", help="write alerts to a JSONL, CSV or Parquet file")
    e.add_argument("--format", required=True, choices=("jsonl", "csv", "parquet"))
    e.add_argument("--out", required=True, metavar="FILE", type=Path,
                   help="the file to write (its directory must exist)")
    _filters(e)
    e.add_argument("--limit", type=positive_int, metavar="N", help="at most N (default all)")
    _store_args(e)
    e.set_defaults(run=run_export)

    _notify_parser(cmds)

    a = cmds.add_parser("ack", help="set an alert's status; a verdict is published as a label",
                        description="Set an alert's status and note, kept with its history. "
                        "confirmed and false_positive also publish a label (1 and 0, source "
                        "analyst, keyed by the alert's subject) to chainwatch.labels, so the "
                        "supervised models learn from it; if Kafka cannot be reached the "
                        "status is still stored, and the command says the label was not "
                        "published and exits 1.")
    a.add_argument("alert_id", metavar="ID", help="an alert id, or its first characters")
    a.add_argument("--status", required=True, choices=ACK_STATUSES)
    a.add_argument("--note", metavar="TEXT", help="the analyst's note (kept if not given)")
    a.add_argument("--store", metavar="URL|PATH", help=STORE_HELP)
    add_common(a)
    a.set_defaults(run=run_ack)


def _notify_parser(cmds: Any) -> None:
    n = cmds.add_parser("notify", help="send alerts at or above a severity to a webhook",
                        description="POST every alert of chainwatch.alerts at or above "
                        "--min-severity to a webhook: the alert's JSON, or a Slack "
                        "incoming-webhook message. Connection errors, timeouts, 429 and 5xx "
                        "are retried with exponential backoff (Retry-After honoured); after "
                        "the last retry, or on another 4xx, the alert goes to chainwatch.dlq "
                        "and the service goes on. Offsets of consumer group --group are "
                        "committed only past alerts delivered, filtered or dead-lettered: a "
                        "restart may send the last few again (each request carries "
                        "Idempotency-Key: ALERT_ID), never skips one. Stops on Ctrl-C or "
                        "SIGTERM. With --metrics-port, serves /metrics, /healthz, /readyz.")
    n.add_argument("--webhook-url", metavar="URL",
                   help="the receiver's http(s) URL (default: setting notify.webhook_url; "
                        "prefer $CHAINWATCH_NOTIFY_WEBHOOK_URL, which other users cannot see "
                        "in the process list)")
    n.add_argument("--format", choices=NOTIFY_FORMATS,
                   help="json: the alert as it is on Kafka; slack: a Slack message "
                        "(default: setting notify.format, json)")
    n.add_argument("--min-severity", choices=SEVERITIES, metavar="LEVEL",
                   help=f"send alerts of this severity and above: {', '.join(SEVERITIES)} "
                        "(default: setting notify.min_severity, medium)")
    n.add_argument("--group", default="chainwatch-notify", metavar="ID",
                   help="the consumer group whose offsets hold the position (default "
                        "chainwatch-notify; give each webhook its own)")
    n.add_argument("--session-timeout", type=positive_number("seconds"), default=10.0,
                   metavar="S",
                   help="how long the group waits for a silent member (a crashed notifier) "
                        "before its partitions move to another, or to its own restart "
                        "(default 10); lower resumes sooner, but a stall longer than S then "
                        "counts as a crash; brokers set a floor (Apache Kafka: "
                        "group.min.session.timeout.ms, 6 s by default)")
    n.add_argument("--until-caught-up", action="store_true",
                   help="exit once every partition is read to its end")
    n.add_argument("--json", action="store_true", help="print a JSON summary on exit")
    add_metrics_port(n)
    add_common(n)
    n.set_defaults(run=run_notify)


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="URL|PATH", help=STORE_HELP)
    add_common(p, bootstrap=False)


def point_in_time(text: str) -> float:
    """An argparse type: unix seconds, or an ISO 8601 time (UTC unless it says otherwise)."""
    from pipeline.alert_schema import point_in_time as parse

    try:
        return parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--type", action="append", default=[], metavar="TYPE",
                   help="only this alert type (repeat, or comma-separate, for several)")
    p.add_argument("--subject", action="append", default=[], metavar="ADDR",
                   help="only alerts about this subject (repeatable)")
    p.add_argument("--severity", action="append", default=[], metavar="LEVEL",
                   help=f"only this severity: {', '.join(SEVERITIES)} (repeatable)")
    p.add_argument("--status", action="append", default=[], metavar="STATUS",
                   help=f"only this status: {', '.join(STATUSES)} (repeatable)")
    p.add_argument("--since", type=point_in_time, metavar="TIME",
                   help="detected at or after TIME (unix seconds or ISO time, stream time)")
    p.add_argument("--until", type=point_in_time, metavar="TIME",
                   help="detected at or before TIME")
    add_check(p, _check_filters)


def _split(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _check_filters(args: argparse.Namespace) -> str | None:
    for flag, allowed in (("severity", SEVERITIES), ("status", STATUSES)):
        bad = [v for v in _split(getattr(args, flag)) if v not in allowed]
        if bad:
            return f"--{flag} {bad[0]!r} is not one of {', '.join(allowed)}"
    if args.since is not None and args.until is not None and args.since > args.until:
        return "--since is after --until; give an earlier --since"
    return None


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args, **{"alerts.store": getattr(args, "store", None),
                                  "audit.store": getattr(args, "audit_store", None),
                                  "audit.public_key": getattr(args, "public_key", None)})


def _open(settings: Settings) -> AlertStore:
    from pipeline.alert_store import AlertStore

    return AlertStore.open(settings.alerts.store, create=False)


def _query(store: AlertStore, args: argparse.Namespace, limit: int | None) -> list[StoredAlert]:
    return store.query(types=_split(args.type), subjects=_split(args.subject),
                       severities=_split(args.severity), statuses=_split(args.status),
                       since=args.since, until=args.until, limit=limit)


def when(seconds: float | int | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


TABLE = "{:>5}  {:<32}  {:<20}  {:<18}  {:<8}  {:>6}  {:<14}  {}"


def _table_lines(alerts: list[StoredAlert]) -> list[str]:
    lines = [TABLE.format("seq", "alert id", "detected (stream)", "type", "severity", "score",
                          "status", "subject")]
    for s in alerts:
        a = s.alert
        lines.append(TABLE.format(s.seq, a.alert_id, when(a.detected_at), a.type, a.severity,
                                  f"{a.score:.3f}", s.status, a.subject))
    return lines


def _print(alerts: list[StoredAlert], as_json: bool, header: bool = True) -> None:
    if as_json:
        for s in alerts:
            sys.stdout.write(s.to_json_line().decode() + "\n")
    else:
        lines = _table_lines(alerts)
        sys.stdout.write("\n".join(lines if header else lines[1:]) + "\n")
    sys.stdout.flush()


def run_sink(args: argparse.Namespace) -> int:
    from consumers.alert_sink import AlertSinkService
    from pipeline.logs import announce

    settings = _settings(args)
    service = AlertSinkService(settings, stop_on_signals())
    store = service.prepare()  # a store that cannot be used: one line, before Kafka
    started = time.monotonic()
    with serving(settings, service, "chainwatch alerts sink"):
        announce(f"chainwatch alerts sink: store {store.shown}, reading "
                 f"{settings.topics.alerts} on {settings.bootstrap_servers}; Ctrl-C to stop")
        stats = service.run(input_finished=(lambda: True) if args.until_caught_up else None)
    summary = {"store": store.shown, "consumed": stats.consumed, "stored": stats.stored,
               "duplicates": stats.duplicates, "dead_lettered": stats.dead_lettered,
               "elapsed_s": round(time.monotonic() - started, 3)}
    if args.json:
        print(json.dumps(summary))
    else:
        announce(f"chainwatch alerts sink: stored {stats.stored:,} alerts "
                 f"({stats.duplicates:,} duplicates, {stats.dead_lettered:,} dead-lettered)")
    return 0


def run_notify(args: argparse.Namespace) -> int:
    from consumers.notifier import NotifierService
    from pipeline.logs import announce
    from pipeline.webhooks import WebhookTarget

    settings = load_settings(args, **{"notify.webhook_url": args.webhook_url,
                                      "notify.format": args.format,
                                      "notify.min_severity": args.min_severity})
    target = WebhookTarget.from_settings(settings.notify)  # one line, before any Kafka work
    session_ms = max(int(args.session_timeout * 1000), 1000)  # heartbeats 3 to a session
    service = NotifierService(settings, target, stop_on_signals(), group_id=args.group,
                              session_timeout_ms=session_ms,
                              heartbeat_interval_ms=max(session_ms // 3, 100))
    started = time.monotonic()
    with serving(settings, service, "chainwatch alerts notify"):
        announce(f"chainwatch alerts notify: {target.min_severity} alerts and above of "
                 f"{settings.topics.alerts} on {settings.bootstrap_servers} to "
                 f"{target.shown} as {target.format} (group {args.group}); Ctrl-C to stop")
        stats = service.run(input_finished=(lambda: True) if args.until_caught_up else None)
    summary = {"webhook": target.shown, "format": target.format, "group": args.group,
               "consumed": stats.consumed, "delivered": stats.delivered,
               "filtered": stats.filtered, "dead_lettered": stats.dead_lettered,
               "retries": stats.retries, "attempts": stats.attempts,
               "elapsed_s": round(time.monotonic() - started, 3)}
    if args.json:
        print(json.dumps(summary))
    else:
        announce(f"chainwatch alerts notify: delivered {stats.delivered:,} alerts "
                 f"({stats.filtered:,} below {target.min_severity}, {stats.dead_lettered:,} "
                 f"dead-lettered, {stats.retries:,} retries)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with _open(_settings(args)) as store:
        alerts = _query(store, args, args.limit)
    if not alerts and not args.json:
        print(f"no alerts match in {store.shown}")
        return 0
    _print(alerts, args.json)
    return 0


def run_tail(args: argparse.Namespace) -> int:
    stop = stop_on_signals()
    with _open(_settings(args)) as store:
        alerts = store.query(limit=args.lines)[::-1]
        _print(alerts, args.json)
        last = alerts[-1].seq if alerts else 0
        while args.follow and not stop.wait(args.interval):
            fresh = store.query(after_seq=last, newest_first=False, limit=1000)
            if fresh:
                _print(fresh, args.json, header=False)
                last = fresh[-1].seq
    return 0


def _found(store: AlertStore, alert_id: str) -> StoredAlert:
    from pipeline.alert_store import AlertStoreError

    found = store.get(alert_id)
    if found is None:
        raise AlertStoreError(f"no alert {alert_id!r} in {store.shown}; see `chainwatch "
                              "alerts list`")
    return found


def run_show(args: argparse.Namespace) -> int:
    from pipeline.alert_proof import FAILED, check_alert
    from pipeline.audit import AuditKeyError
    from pipeline.audit.trust import configured_public_key

    settings = _settings(args)
    with _open(settings) as store:
        found = _found(store, args.alert_id)
        history = store.history(found.alert_id)
    try:
        key = configured_public_key(settings) if Path(settings.audit.store).is_file() else ""
        check = check_alert(found.raw, found.alert_id, settings.audit.store, key)
        outcome, message = check.outcome, check.message
    except AuditKeyError as exc:
        outcome, message = "no_key", f"cannot check against {settings.audit.store}: {exc}"
    a = found.alert
    if args.json:
        print(json.dumps(found.to_json_dict() | {
            "history": [{"status": h.status, "note": h.note, "at": h.at} for h in history],
            "audit": {"outcome": outcome, "message": message, "store": settings.audit.store}}))
        return 1 if outcome == FAILED else 0
    width = max((len(k) for k in a.evidence), default=8)
    lines = [
        f"alert {a.alert_id}  (seq {found.seq}, stored {when(found.stored_at)})",
        f"  type        {a.type}",
        f"  severity    {a.severity}, score {a.score}",
        f"  subject     {a.subject}",
        *([f"  addresses   {', '.join(a.addresses)}"] if a.addresses else []),
        f"  detector    {a.detector} (model {a.model_version})",
        f"  event time  {when(a.event_time)} ({a.event_time}); detected {when(a.detected_at)}"
        f" ({a.detected_at})",
        *([f"  labels      {json.dumps(a.labels, sort_keys=True)}"] if a.labels else []),
        f"  status      {found.status}" + (f" ({when(found.status_updated_at)})"
                                           if found.status_updated_at else ""),
        f"  note        {found.note or '-'}",
        "evidence",
        *(f"  {k:<{width}}  {_value(v)}" for k, v in sorted(a.evidence.items())),
        "source",
        "  " + ", ".join(f"{k} {a.source[k]}" for k in ("topic", "partition", "offset")
                         if k in a.source),
        *(f"  item {item}" for item in a.source.get("item_ids", [])),
        "history",
        *([f"  {when(h.at)}  {h.status}" + (f": {h.note}" if h.note else "")
           for h in history] or ["  (no analyst action yet)"]),
        f"audit  {outcome.upper().replace('_', ' ')}: {message}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 1 if outcome == FAILED else 0


def _value(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else json.dumps(v) if isinstance(
        v, dict | list) else str(v)


def run_export(args: argparse.Namespace) -> int:
    from pipeline.alert_export import export
    from pipeline.logs import announce

    output_file("--out", args.out)
    with _open(_settings(args)) as store:
        alerts = _query(store, args, args.limit)
    written = export(alerts, args.format, args.out)
    noun = "alert" if written == 1 else "alerts"
    announce(f"chainwatch alerts export: {written:,} {noun} to {args.out} ({args.format})")
    return 0


def run_ack(args: argparse.Namespace) -> int:
    from producers.verdicts import publish_label

    settings = _settings(args)
    with _open(settings) as store:
        updated = store.set_status(args.alert_id, args.status, args.note)
    print(f"{updated.alert_id}: status {updated.status}"
          + (f", note {updated.note!r}" if updated.note else ""))
    label = updated.verdict_label()
    if label is None:
        return 0
    why = publish_label(settings, label)
    topic = settings.topics.labels
    if why is not None:
        print(f"the status is stored, but the label was NOT published to {topic} on "
              f"{settings.bootstrap_servers}: {why}; run the command again when Kafka is up")
        return 1
    print(f"published label {label.label} ({updated.status}) for {label.subject} to {topic}")
    return 0
