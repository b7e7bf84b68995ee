"""``chainwatch topics``: create chainwatch's topics, idempotently."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.cli.common import add_common, load_settings

HELP = """\
Create every chainwatch topic that does not exist yet, with the configured partition counts
(settings partitions.*). Existing topics are left unchanged.

example:
  chainwatch topics --bootstrap 127.0.0.1:9092
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("topics", help="create chainwatch's topics on a broker",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.topics import ensure_topics

    settings = load_settings(args)
    for topic, outcome in ensure_topics(settings).items():
        print(f"{topic:<24} {outcome}")
    return 0
