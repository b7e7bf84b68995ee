"""The ``chainwatch`` command: parses, validates and wires objects; no logic lives here.

Each subcommand is a module in this package with ``add_parser(subparsers)`` and ``run(args)``.
Errors chainwatch raises on purpose print as one line and exit with status 2; Ctrl-C exits
with 130.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from pipeline import logs
from pipeline.cli import (
    alerts_cmd,
    audit_cmd,
    broker_cmd,
    demo_cmd,
    detectors_cmd,
    evaluate_cmd,
    produce_cmd,
    score_cmd,
    topics_cmd,
    ui_cmd,
)
from pipeline.cli.parser import Parser
from pipeline.errors import ChainwatchError
from pipeline.settings import env_var

EXAMPLES = """examples:
  chainwatch demo                      # the whole pipeline on a local broker, with a summary
  chainwatch demo --json --seed 7      # the same, as one JSON object on stdout
  chainwatch broker --port 9092        # a local Kafka-protocol broker in the foreground
  chainwatch broker --engine kafka --nodes 3   # Apache Kafka itself, a three-node cluster
  chainwatch produce synth --bootstrap 127.0.0.1:9092 --blocks 2000 --truth truth.jsonl
  chainwatch produce replay ../shared/data/uniswap-v2-2021 --format uniswap-v2 \\
      --bootstrap 127.0.0.1:9092 --cursor uni.cursor
  chainwatch topics --bootstrap 127.0.0.1:9092   # create chainwatch's topics
  chainwatch audit verify                        # check the audit log, leaf by leaf
  chainwatch alerts list --store chainwatch-data/demo/alerts.db   # the demo's alerts
  chainwatch detectors list --config chainwatch.toml   # the rules a scorer would run
"""


def build_parser() -> Parser:
    parser = Parser(
        prog="chainwatch",
        description="Streaming fraud detection for blockchain data.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for module in (demo_cmd, produce_cmd, score_cmd, evaluate_cmd, audit_cmd, alerts_cmd,
                   broker_cmd, topics_cmd, detectors_cmd, ui_cmd):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # until the settings are loaded (they may name another format): the flag, else the env
    logs.configure(getattr(args, "log_level", "WARNING"),
                   getattr(args, "log_format", None) or os.environ.get(env_var("log_format"))
                   or "text")
    try:
        return int(args.run(args))
    except ChainwatchError as exc:
        logs.announce(f"chainwatch {args.command}: error: {exc}", logging.ERROR)
        return 2
    except KeyboardInterrupt:
        logs.announce(f"chainwatch {args.command}: interrupted", logging.WARNING)
        return 130
    except BrokenPipeError:  # `chainwatch alerts list --json | head`: the reader has had enough
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush stays quiet
        return 141  # as a process killed by SIGPIPE


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"chainwatch {version('chainwatch')}"
    except PackageNotFoundError:
        return "chainwatch (not installed)"
