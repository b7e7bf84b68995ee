"""``chainwatch produce synth|replay|rpc``: write chain data into Kafka."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.cli.common import (
    add_check,
    add_common,
    add_metrics_port,
    fraction,
    load_settings,
    node_url_given,
    non_negative_int,
    output_file,
    positive_int,
    positive_number,
    rpc_url,
    serving,
    stop_on_signals,
)

SYNTH_HELP = """\
Stream a deterministic synthetic chain (wallets, ERC-20 tokens, Uniswap-V2-style pools) with
injected, labelled fraud campaigns into Kafka, and write the campaigns' ground truth as JSON
lines. The same seed gives the same chain, item ids and truth file, byte for byte.

examples:
  chainwatch produce synth --bootstrap 127.0.0.1:9092 --blocks 2000 --seed 7 --truth truth.jsonl
  chainwatch produce synth --blocks 500 --campaigns pump_and_dump=4,rug_pull=3 --rate 2000
"""

REPLAY_HELP = """\
Replay historical chain data into Kafka in chain order, streaming files of any size in
constant memory. PATH is a file or a folder of files (.csv, .jsonl, .parquet).

formats:
  transactions     ethereum-etl / BigQuery transactions           -> chain.transactions
  token-transfers  ethereum-etl / BigQuery token_transfers        -> chain.transactions
  logs             ethereum-etl stream / BigQuery logs, Uniswap-V2 pair events (--pools)
                                                                  -> chain.dex
  uniswap-v2       the uniswap-v2-2021 folder (events + pools)   -> chain.dex
  blte             blte-ethereum-scam-tx transactions.csv         -> chain.transactions,
                   labels released --label-delay-blocks later      chainwatch.labels
  trades           ccxt fetch_trades rows, or the pump-telegram-  -> market.trades,
                   binance folder (pump_id is the stream key)      chainwatch.labels
                   venue: a venue/exchange column, else --venue NAME; pumps.csv beside
                   the trades: one label per pump, released --label-delay-s after its
                   announced_at in trade time. Stream time is the trade's unix second,
                   and --start-block/--end-block take unix seconds with this format.

Bad rows go to chainwatch.dlq with their file, line and reason. With --cursor, a restart
after a crash or Ctrl-C resumes where the last durable write ended.

examples:
  chainwatch produce replay ../shared/data/uniswap-v2-2021 --format uniswap-v2 --cursor uni.cursor
  chainwatch produce replay exports/transactions/ --format transactions --speed 10x
  chainwatch produce replay ../shared/data/pump-telegram-binance --format trades
  chainwatch produce replay btc_trades.jsonl --format trades --venue binance
"""

RPC_HELP = """\
Follow a chain's head through Ethereum JSON-RPC (web3.py; http(s):// or ws(s)://) and write
its transactions (with their receipts' status and gas used), ERC-20 transfers and Uniswap-V2
pair events as the replay formats write them. Reorg-safe: the last --keep-blocks hashes are
kept, and each block a reorg orphans is retracted (a retraction record on every topic it
was written to) before the new branch. With --cursor, a restart after any crash resumes with
no gap, sending again only identical records.

The URL may carry a provider's API key: it is never printed or logged beyond its host. Give
it in CHAINWATCH_RPC_URL rather than on the command line, where other users can see it.

examples:
  chainwatch produce rpc --rpc-url http://127.0.0.1:8545 --cursor chain.cursor
  CHAINWATCH_RPC_URL=wss://… chainwatch produce rpc --confirmations 6 --factory 0x5c69…
  chainwatch produce rpc --start-block 19000000 --until-block 19000100 --json
"""

MAX_LABEL_DELAY_S = 10 * 366 * 86_400  # ten years: beyond it, a label is never released


def speed(text: str) -> float | None:
    if text == "max":
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)x", text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not max, 1x or Nx (e.g. 10x)")
    return float(match.group(1))


def campaigns(text: str) -> dict[str, float]:
    from producers.campaigns import CAMPAIGN_TYPES

    out: dict[str, float] = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        if name not in CAMPAIGN_TYPES:
            raise argparse.ArgumentTypeError(
                f"unknown campaign {name!r}; choose from {', '.join(sorted(CAMPAIGN_TYPES))}")
        try:
            rate = float(value) if value else 4.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: rate must be a number") from None
        if not (math.isfinite(rate) and rate >= 0):
            raise argparse.ArgumentTypeError(f"{part!r}: rate must be >= 0 (campaigns per "
                                             "1000 blocks)")
        out[name] = rate
    return out


def venue(text: str) -> str:
    from pipeline.records import TEXT_LIMITS

    name = text.strip()
    if not name or len(name) > TEXT_LIMITS["venue"] or any(c.isspace() for c in name):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a venue name; give the exchange as ccxt names it, e.g. binance "
            f"(no spaces, at most {TEXT_LIMITS['venue']} characters)")
    return name


def label_delay_s(text: str) -> int:
    value = non_negative_int(text)
    if value > MAX_LABEL_DELAY_S:
        raise argparse.ArgumentTypeError(f"{value} s is over ten years; give at most "
                                         f"{MAX_LABEL_DELAY_S} seconds (default 3600)")
    return value


def trade_options(args: argparse.Namespace) -> str | None:
    """--venue names the exchange of trades; with any other format it is a mistake."""
    if args.venue is not None and args.format != "trades":
        return f"--venue is for --format trades, not {args.format}; drop it"
    return None


def block_range(args: argparse.Namespace) -> str | None:
    """--start-block after --end-block selects nothing: a mistake, said before the replay."""
    start, end = args.start_block, args.end_block
    if start is not None and end is not None and start > end:
        return (f"--start-block {start} is after --end-block {end}; give --start-block <= "
                "--end-block")
    return None


def address(text: str) -> str:
    value = text.strip().lower()
    if not re.fullmatch(r"0x[0-9a-f]{40}", value):
        raise argparse.ArgumentTypeError(f"{text!r} is not an address (0x and 40 hex digits)")
    return value


def rpc_options(args: argparse.Namespace) -> str | None:
    """The node's URL (flag or CHAINWATCH_RPC_URL) and a sane block range, before any work."""
    if problem := node_url_given(args):
        return problem
    start, until = args.start_block, args.until_block
    if start is not None and until is not None and start > until:
        return (f"--start-block {start} is after --until-block {until}; give --start-block <= "
                "--until-block")
    return None


def add_parser(sub: Any) -> None:
    p = sub.add_parser("produce", help="write synthetic or historical chain data into Kafka",
                       description="Write chain data into Kafka: `produce synth` or "
                                   "`produce replay` (see their --help).")
    produce = p.add_subparsers(dest="source", metavar="SOURCE", parser_class=type(p))
    produce.required = True

    s = produce.add_parser("synth", help="a synthetic chain with labelled fraud campaigns",
                           description=SYNTH_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--blocks", type=positive_int, default=1000, help="blocks (default 1000)")
    s.add_argument("--seed", type=non_negative_int, default=0, help="world seed (default 0)")
    s.add_argument("--truth", type=Path, metavar="FILE",
                   help="write ground truth here (JSONL); its directory must exist")
    s.add_argument("--rate", type=positive_number("events per second"), metavar="EV/S",
                   help="pace to this many events/s (> 0)")
    s.add_argument("--campaigns", type=campaigns, metavar="TYPE=RATE,...",
                   help="campaigns per 1000 blocks (default: every type at 4)")
    s.add_argument("--difficulty", type=fraction, default=0.5,
                   help="0 blatant … 1 subtle (default 0.5)")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_metrics_port(s)
    add_common(s)
    s.set_defaults(run=run_synth)

    r = produce.add_parser("replay", help="historical files in chain order",
                           description=REPLAY_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("path", type=Path, metavar="PATH", help="a file or a folder of files")
    r.add_argument("--format", required=True, metavar="F",
                   help="transactions | token-transfers | logs | uniswap-v2 | blte | trades")
    r.add_argument("--speed", type=speed, default=None, metavar="max|1x|Nx",
                   help="pace by block timestamps, trades by their timestamps (default max)")
    r.add_argument("--limit", type=positive_int, metavar="N", help="read at most N rows")
    r.add_argument("--start-block", type=non_negative_int, metavar="B",
                   help="skip rows before block B (--format trades: before unix second B)")
    r.add_argument("--end-block", type=non_negative_int, metavar="B",
                   help="stop after block B (--format trades: after unix second B)")
    r.add_argument("--cursor", type=Path, metavar="FILE",
                   help="resume from / save to FILE; its directory must exist")
    r.add_argument("--pools", type=Path, metavar="FILE",
                   help="pool_address,token0,token1 table (format logs)")
    r.add_argument("--label-delay-blocks", type=non_negative_int, default=5760,
                   help="blocks after a labelled event its label is released (blte; "
                        "default 5760, about a day)")
    r.add_argument("--venue", type=venue, metavar="NAME",
                   help="the exchange of trades without a venue or exchange column "
                        "(format trades), e.g. binance")
    r.add_argument("--label-delay-s", type=label_delay_s, default=3600, metavar="S",
                   help="seconds after a pump's announcement its label is released, in "
                        "trade time (format trades; default 3600)")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_metrics_port(r)
    add_common(r)
    add_check(r, block_range)
    add_check(r, trade_options)
    r.set_defaults(run=run_replay)

    c = produce.add_parser("rpc", help="follow a live chain over JSON-RPC, reorg-safe",
                           description=RPC_HELP, formatter_class=argparse.RawTextHelpFormatter)
    c.add_argument("--rpc-url", type=rpc_url, metavar="URL",
                   help="the node (default: CHAINWATCH_RPC_URL)")
    c.add_argument("--start-block", type=non_negative_int, metavar="B",
                   help="the first block (default: the head when first started; a --cursor "
                        "resumes instead)")
    c.add_argument("--until-block", type=non_negative_int, metavar="B",
                   help="stop after writing this block (default: follow forever)")
    c.add_argument("--confirmations", type=non_negative_int, default=0, metavar="K",
                   help="read only blocks K below the head (default 0: retract on reorgs)")
    c.add_argument("--factory", type=address, metavar="ADDR",
                   help="only this Uniswap-V2 factory's pairs (default: any V2 pair)")
    c.add_argument("--batch-blocks", type=positive_int, default=20, metavar="N",
                   help="blocks asked for in one batch (default 20)")
    c.add_argument("--rate", type=positive_number("requests per second"), default=50.0,
                   metavar="R", help="requests per second at most (default 50)")
    c.add_argument("--max-retries", type=non_negative_int, default=8, metavar="N",
                   help="retries of a failing request, with backoff (default 8)")
    c.add_argument("--poll-interval", type=positive_number("seconds"), default=1.0,
                   metavar="S", help="how often to ask for a new head (default 1 s)")
    c.add_argument("--keep-blocks", type=positive_int, default=128, metavar="N",
                   help="block hashes kept: the deepest reorg retracted (default 128)")
    c.add_argument("--cursor", type=Path, metavar="FILE",
                   help="resume from, and save progress to, FILE")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_metrics_port(c)
    add_common(c)
    add_check(c, rpc_options)
    c.set_defaults(run=run_rpc)


def run_synth(args: argparse.Namespace) -> int:
    from pipeline.health import ServiceHealth
    from pipeline.topics import ensure_topics
    from producers.campaigns import CAMPAIGN_TYPES
    from producers.stream import produce_synth
    from producers.synth import SynthConfig

    if args.truth is not None:
        output_file("--truth", args.truth)
    settings = load_settings(args)
    config = SynthConfig(seed=args.seed, blocks=args.blocks, difficulty=args.difficulty,
                         campaigns=args.campaigns or dict.fromkeys(CAMPAIGN_TYPES, 4.0))
    health = ServiceHealth()
    with serving(settings, health, "chainwatch produce synth"):
        ensure_topics(settings)
        summary = produce_synth(settings, config, args.truth, rate_per_s=args.rate,
                                stop=stop_on_signals(), health=health,
                                progress=settings.log_format == "text")
    if args.json:
        print(json.dumps(asdict(summary) | {"produced": summary.produced}))
    else:
        print(f"synth: {summary.produced:,} events ({summary.transactions:,} transactions, "
              f"{summary.dex_events:,} DEX events) from {summary.blocks:,} blocks, "
              f"{summary.campaigns} campaigns, in {summary.elapsed_s:.1f} s"
              + (f"; truth in {summary.truth_path}" if summary.truth_path else ""))
    return 0


def run_replay(args: argparse.Namespace) -> int:
    from pipeline.health import ServiceHealth
    from pipeline.topics import ensure_topics
    from producers.formats import make_format
    from producers.replay import Replayer, ReplayOptions

    if args.cursor is not None:
        output_file("--cursor", args.cursor)
    fmt = make_format(args.format, args.pools, args.label_delay_blocks, venue=args.venue,
                      label_delay_s=args.label_delay_s)  # fail fast
    settings = load_settings(args)
    options = ReplayOptions(speed=args.speed, limit=args.limit, start_block=args.start_block,
                            end_block=args.end_block, cursor=args.cursor,
                            progress=settings.log_format == "text")
    health = ServiceHealth()
    replayer = Replayer(settings, args.format, args.path, options, pools=args.pools,
                        label_delay_blocks=args.label_delay_blocks, venue=args.venue,
                        label_delay_s=args.label_delay_s, stop=stop_on_signals(),
                        health=health)
    with serving(settings, health, "chainwatch produce replay"):
        # a missing file, or one not of its --format, is one line before the broker is asked
        fmt.files(args.path)
        ensure_topics(settings)
        summary = replayer.run()
    if args.json:
        print(json.dumps(asdict(summary)))
        return 0
    reasons = ", ".join(f"{k} {v}" for k, v in summary.dead_letter_reasons.items())
    lines = [
        f"replay {summary.format}: {summary.source}",
        f"  read {summary.read:,} rows = produced {summary.produced:,} + dead-lettered "
        f"{summary.dead_lettered:,} + skipped {summary.skipped:,}"
        + (f" (dead letters: {reasons})" if reasons else ""),
        f"  records {summary.records:,}, labels {summary.labels:,}, in {summary.elapsed_s:.1f} s"
        + (f", {summary.out_of_order:,} out of chain order" if summary.out_of_order else ""),
        "  " + ("finished" if summary.finished else
                "stopped early; run again with the same --cursor to resume"),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def run_rpc(args: argparse.Namespace) -> int:
    from pipeline.health import ServiceHealth
    from pipeline.topics import ensure_topics
    from producers.rpc import RpcOptions, RpcSource

    if args.cursor is not None:
        output_file("--cursor", args.cursor)
    settings = load_settings(args)
    options = RpcOptions(start_block=args.start_block, until_block=args.until_block,
                         confirmations=args.confirmations, factory=args.factory,
                         batch_blocks=args.batch_blocks, rate=args.rate,
                         max_retries=args.max_retries, poll_s=args.poll_interval,
                         keep=args.keep_blocks, cursor=args.cursor,
                         progress=settings.log_format == "text")
    health = ServiceHealth()
    source = RpcSource(settings, args.rpc_url, options, stop=stop_on_signals(), health=health)
    with serving(settings, health, "chainwatch produce rpc"):
        ensure_topics(settings)
        summary = source.run()
    if args.json:
        print(json.dumps(asdict(summary) | {"records": summary.records}))
        return 0
    span = ("no block" if summary.first_block is None
            else f"blocks {summary.first_block}-{summary.last_block}")
    print(f"rpc {summary.source} (chain {summary.chain_id}): {span}, {summary.blocks:,} "
          f"blocks, {summary.records:,} records ({summary.transactions:,} transactions, "
          f"{summary.token_transfers:,} token transfers, {summary.dex_events:,} DEX events), "
          f"{summary.reorgs} reorgs ({summary.retractions} blocks retracted), "
          f"{summary.requests:,} requests ({summary.retries} retried), in "
          f"{summary.elapsed_s:.1f} s" + ("" if summary.finished else "; stopped early"))
    return 0
