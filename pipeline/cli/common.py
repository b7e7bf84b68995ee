"""Argument types and the options shared by subcommands."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable
from typing import Any

from pipeline.settings import Settings


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    return parse


positive_int = whole_number(1)
non_negative_int = whole_number(0)


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return value


def port(text: str) -> int:
    value = non_negative_int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1-65535)")
    return value


def add_common(parser: argparse.ArgumentParser, bootstrap: bool = True) -> None:
    """--config, --log-level and (for commands that talk to Kafka) --bootstrap."""
    parser.add_argument("--config", metavar="FILE",
                        help="TOML settings file (default: $CHAINWATCH_CONFIG)")
    if bootstrap:
        parser.add_argument("--bootstrap", metavar="HOST:PORT",
                            help="Kafka bootstrap servers (default: "
                                 "$CHAINWATCH_BOOTSTRAP_SERVERS or 127.0.0.1:9092)")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log verbosity on stderr (default: WARNING)")


def load_settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings from the file, the environment and the flags given (flags win)."""
    flags = {"bootstrap_servers": getattr(args, "bootstrap", None)} | overrides
    return Settings.load(config_file=args.config, overrides=flags)


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM, so services stop cleanly between batches."""
    stop = threading.Event()
    handler: Callable[[int, Any], None] = lambda _sig, _frame: stop.set()  # noqa: E731
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop
