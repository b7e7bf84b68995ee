"""Serving the web view: who it may be exposed to, the socket, uvicorn.

uvicorn runs the app on a socket bound here first (so ``--port 0`` takes a free port and
the URL is known before serving), stops cleanly on SIGINT and SIGTERM (exit status 0), and
gives open event streams one second to end.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from types import FrameType
from typing import TextIO

import uvicorn

from consumers.ui.app import build_app
from pipeline.alert_store import AlertStore
from pipeline.errors import ConfigError
from pipeline.settings import Settings

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def check_exposure(settings: Settings) -> None:
    """ConfigError (one line) if the settings would serve the alert store beyond this
    machine without authentication, or give half of basic authentication."""
    ui = settings.ui
    if bool(ui.username) != bool(ui.password):
        raise ConfigError("basic authentication needs both ui.username and ui.password "
                          "(CHAINWATCH_UI_USERNAME, CHAINWATCH_UI_PASSWORD); set both or neither")
    if ui.host not in LOOPBACK and not (ui.token or ui.username):
        raise ConfigError(f"--host {ui.host} would serve the alert store beyond this machine "
                          "without authentication: set ui.token (CHAINWATCH_UI_TOKEN) or "
                          "ui.username and ui.password, or serve on 127.0.0.1")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: a free port); ConfigError if taken."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot serve on {host}:{port}: {exc}; give another --host") \
            from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; give "
                          "another --port (0 for a free one)") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _stop_on_signals(server: uvicorn.Server) -> None:
    """SIGINT and SIGTERM stop ``server`` even before it starts; uvicorn, which installs its
    own handlers while it runs, raises the signal again after its clean shutdown, and this
    handler takes it then too, so a stopped server exits 0."""

    def stop(_sig: int, _frame: FrameType | None) -> None:
        server.should_exit = True

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)


def serve(settings: Settings, out: TextIO = sys.stdout) -> int:
    """Serve until SIGINT or SIGTERM; the URL is the first line written to ``out``."""
    check_exposure(settings)
    store = AlertStore.open(settings.alerts.store, create=False)
    try:
        config = uvicorn.Config(build_app(settings, store), log_config=None,
                                log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1, server_header=False)
        server = uvicorn.Server(config)
        _stop_on_signals(server)
        sock = bind(settings.ui.host, settings.ui.port)
        with sock:
            out.write(url_of(sock) + "\n")
            out.flush()
            server.run(sockets=[sock])
    finally:
        store.close()
    return 0
