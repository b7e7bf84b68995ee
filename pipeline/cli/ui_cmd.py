"""``chainwatch ui``: the web view on the alert store and the audit log."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.cli.common import add_common, load_settings, port_or_off

HELP = """\
A small web app on the alert store: the alert queue (newest first, filters, updating live),
a page per alert (evidence, source records, a chart of the subject's alerts, the audit
proof checked, status and note), and JSON endpoints (/api/alerts, /api/alerts/ID,
/api/alerts/ID/status, /api/stream). The first line on stdout is the URL it serves.

Authentication: setting ui.token (a bearer token, or the cookie /login?token=TOKEN sets)
or ui.username and ui.password (HTTP basic); required to serve beyond loopback.

examples:
  chainwatch ui --store chainwatch-data/demo/alerts.db --audit-store chainwatch-data/demo/audit.db
  chainwatch ui --port 0                                     # a free port
  CHAINWATCH_UI_TOKEN=s3cret chainwatch ui --host 0.0.0.0    # beyond loopback, with a token
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ui", help="the web view: live alert queue, alert pages, JSON API",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", metavar="URL|PATH",
                   help="the alert store (default: setting alerts.store)")
    p.add_argument("--audit-store", metavar="PATH",
                   help="the audit log the alert pages prove against (default: setting "
                        "audit.store)")
    p.add_argument("--public-key", metavar="KEY",
                   help="the audit log's public key (default: setting audit.public_key, else "
                        "the .pub file beside its private key)")
    p.add_argument("--host", metavar="HOST",
                   help="the address to serve on (default: setting ui.host, 127.0.0.1)")
    p.add_argument("--port", type=port_or_off, metavar="PORT",
                   help="the port (default: setting ui.port, 8600; 0 for a free one)")
    add_common(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from consumers.ui import check_exposure, serve

    settings = load_settings(args, **{"alerts.store": args.store,
                                      "audit.store": args.audit_store,
                                      "audit.public_key": args.public_key,
                                      "ui.host": args.host, "ui.port": args.port})
    check_exposure(settings)  # one line, before the store is opened or a port taken
    return serve(settings)
