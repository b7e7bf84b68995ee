"""``chainwatch detectors list``: the rules a scorer with these settings would run."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pipeline.cli.common import add_common, load_settings

HELP = """\
List every active rule: its name (the alert type it raises), the record kind it scores, the
detector class with its version and parameters, and the filter that decides. Rules come from
the entry-point group chainwatch.detectors (the built-ins are registered there too) and from
the settings file's [detectors.NAME] tables, which add, re-parameterise or disable them.
Every detector is imported and tried once, as the scorer does at start-up.

examples:
  chainwatch detectors list
  chainwatch detectors list --json --config chainwatch.toml
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("detectors", help="list the active detectors (rules)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="print every active rule",
                                 description=HELP,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    listing.add_argument("--json", action="store_true",
                         help="one JSON object per rule and line")
    add_common(listing, bootstrap=False)
    listing.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.rules import RuleSet

    settings = load_settings(args)
    rules = RuleSet.load(settings.detectors).describe()
    if args.json:
        for rule in rules:
            print(json.dumps(rule, sort_keys=True))
        return 0
    for rule in rules:
        params = ", ".join(f"{k}={v!r}" for k, v in rule["params"].items())
        print(f"{rule['name']}  on {rule['on']}  {rule['class']} (detector {rule['detector']} "
              f"v{rule['version']})\n    params: {params or '-'}\n    filter: {rule['filter']}"
              f"; learns {rule['learn']} events")
    return 0
