"""Argument types and the options shared by subcommands."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pipeline.settings import LOG_FORMATS, Settings

if TYPE_CHECKING:
    from pipeline.health import Probe


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


def port_or_off(text: str) -> int:
    """A port, or 0 for "off"."""
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1-65535, or 0 for none)")
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
def serving(settings: Settings, probe: Probe, command: str) -> Iterator[None]:
    """/metrics, /healthz and /readyz on the settings' metrics port while the block runs
    (nothing when it is 0); a taken port is a one-line error before the service starts."""
    from pipeline.health import health_server
    from pipeline.logs import announce

    with health_server(settings, probe) as server:
        if server is not None:
            announce(f"{command}: /metrics, /healthz and /readyz on "
                     f"{settings.metrics_host}:{server.port}")
        yield
