"""Argument types and the options shared by subcommands."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pipeline.cli.parser import Check, Parser
from pipeline.errors import ConfigError
from pipeline.settings import LOG_FORMATS, Settings

if TYPE_CHECKING:
    from pipeline.health import Probe, Route


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


def positive_number(unit: str) -> Callable[[str], float]:
    """An argparse type: a finite number above 0, in ``unit`` (named in the error)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be > 0 ({unit}), not {text}")
        return value

    return parse


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


def port_or_off(text: str) -> int:
    """A port, or 0 for "off"."""
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1-65535, or 0 for none)")
    return value


def rpc_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            "give the node's URL as http(s)://HOST[:PORT][/PATH] or ws(s)://…, e.g. "
            "http://127.0.0.1:8545")
    return text.strip()


def node_url_given(args: argparse.Namespace) -> str | None:
    """``args.rpc_url`` from the flag or, when absent, CHAINWATCH_RPC_URL; the problem in one
    line when neither gives a usable URL."""
    if args.rpc_url is None:
        env = os.environ.get("CHAINWATCH_RPC_URL")
        if not env:
            return "give the node's URL: --rpc-url URL, or CHAINWATCH_RPC_URL"
        try:
            args.rpc_url = rpc_url(env)
        except argparse.ArgumentTypeError as exc:
            return f"CHAINWATCH_RPC_URL: {exc}"
    return None


def add_check(parser: argparse.ArgumentParser, check: Check) -> None:
    """Check the parsed arguments of ``parser`` together: ``check`` returns the problem in
    one line (the command then exits with status 2 before it runs), or None."""
    if not isinstance(parser, Parser):
        raise TypeError(f"{parser.prog} is not a chainwatch Parser")
    parser.checks.append(check)


def output_directory(flag: str, path: Path) -> None:
    """A directory chainwatch will create and write (``--out``): not an existing file, and
    inside a directory this process may write. Raises ConfigError in one line."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file; give a directory (it will be created)")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path} cannot be created: {existing} is a file, not a "
                          "directory; give a directory (it will be created)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path} cannot be written: no write permission in "
                          f"{existing}; choose another directory")


def output_file(flag: str, path: Path) -> None:
    """A file chainwatch will write (``--truth``, ``--cursor``): its directory must already
    exist, since chainwatch creates no directory the user did not ask for. Raises
    ConfigError in one line."""
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; give a file name")
    parent = path.parent
    if not parent.exists():
        raise ConfigError(f"{flag} {path}: directory {parent} does not exist; create it first")
    if not parent.is_dir():
        raise ConfigError(f"{flag} {path}: {parent} is not a directory; give a file in an "
                          "existing directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: directory {parent} is not writable; choose "
                          "another place")


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
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=None,
                        help="text for people, json for one object a line (default: "
                             "$CHAINWATCH_LOG_FORMAT or text)")


def add_metrics_port(parser: argparse.ArgumentParser) -> None:
    """--metrics-port, for long-running services (pipeline.health)."""
    parser.add_argument("--metrics-port", type=port_or_off, metavar="PORT",
                        help="serve /metrics, /healthz and /readyz on this port, 0 for none "
                             "(default: $CHAINWATCH_METRICS_PORT or 0; address: "
                             "$CHAINWATCH_METRICS_HOST or 127.0.0.1, local only; 0.0.0.0 "
                             "for every interface)")


def load_settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings from the file, the environment and the flags given (flags win).

    Logging then takes the settings' format, and redacts their secrets from then on.
    """
    from pipeline import logs

    flags = {"bootstrap_servers": getattr(args, "bootstrap", None),
             "log_format": getattr(args, "log_format", None),
             "metrics_port": getattr(args, "metrics_port", None)} | overrides
    settings = Settings.load(config_file=args.config, overrides=flags)
    logs.redact_settings(settings)
    logs.configure(getattr(args, "log_level", "WARNING"), settings.log_format)
    return settings


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM, so services stop cleanly between batches."""
    stop = threading.Event()
    handler: Callable[[int, Any], None] = lambda _sig, _frame: stop.set()  # noqa: E731
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


@contextlib.contextmanager
def serving(settings: Settings, probe: Probe, command: str,
            routes: Mapping[str, Route] | None = None) -> Iterator[None]:
    """/metrics, /healthz and /readyz (and ``routes``) on the settings' metrics port while the
    block runs (nothing when it is 0); a taken port is a one-line error before the service
    starts."""
    from pipeline.health import health_server
    from pipeline.logs import announce

    with health_server(settings, probe, routes) as server:
        if server is not None:
            announce(f"{command}: {', '.join(server.paths)} on "
                     f"{settings.metrics_host}:{server.port}")
        yield
