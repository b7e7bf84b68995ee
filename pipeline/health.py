"""Prometheus metrics, liveness and readiness of a service over HTTP, on one port.

Every long-running command (``score``, ``audit serve``, ``produce synth|replay``) serves, on
``metrics_port`` (``--metrics-port``, ``CHAINWATCH_METRICS_PORT``; 0 turns it off) and
``metrics_host`` (``CHAINWATCH_METRICS_HOST``, default ``127.0.0.1``, local only; a container
sets ``0.0.0.0`` so that a scraper in another container reaches it, as the compose file does):

``/metrics``
    prometheus-client's default registry, in the format the scraper asks for (OpenMetrics
    or the Prometheus text format).
``/healthz``
    200 ``ok`` while the service loop is turning; 503 with the reason once it has not
    turned for ``stall_after_s`` seconds (a hung broker call, a deadlock).
``/readyz``
    200 ``ready: …`` when the service says it does its job (a consumer has its partitions
    and is caught up, a producer is connected); 503 ``not ready: …`` otherwise.

A service may serve more on the same port: ``routes`` maps a path prefix (``/v1/``) to a
:data:`Route`, a function of the request's path and query that answers a :class:`Reply`
(the auditor's read-only JSON API, :mod:`pipeline.audit.api`, is one). A route runs in the
request's own thread, so it must not share what the service loop uses (open its own
connections); if it raises, the client gets a 500 with a JSON error and the traceback goes
to the log only.

kafka-python clients are not thread-safe, so the HTTP thread never touches them: the
service loop publishes its state into a :class:`ServiceHealth` (one attribute holding an
immutable tuple, so a reader never sees half an update) and the server only reads that.

>>> health = ServiceHealth()
>>> health.ready()
(False, 'starting')
>>> health.set_ready(True, "connected")
>>> health.ready(), health.alive()
((True, 'connected'), (True, 'ok'))
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType, TracebackType
from typing import Protocol
from urllib.parse import parse_qsl

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

from pipeline.errors import PortInUse
from pipeline.settings import Settings

log = logging.getLogger(__name__)

STALL_AFTER_S = 120.0  # longer than a slow checkpoint or group join, shorter than a hang
PLAIN = "text/plain; charset=utf-8"
JSON = "application/json"
BUILT_IN = ("/metrics", "/healthz", "/readyz")


@dataclass(frozen=True, slots=True)
class Reply:
    """What a :data:`Route` answers: a status, a body and its content type."""

    status: int
    body: bytes
    content_type: str = JSON

    @classmethod
    def json(cls, status: int, document: object) -> Reply:
        """``document`` as JSON (keys sorted, one line and a newline)."""
        return cls(status, json.dumps(document, sort_keys=True).encode() + b"\n")

    @classmethod
    def error(cls, status: int, message: str) -> Reply:
        """``{"error": message}`` with ``status``."""
        return cls.json(status, {"error": message})


Route = Callable[[str, Mapping[str, str]], Reply]
"""``route(path, query) -> Reply``: ``path`` as requested (still percent-encoded, without
the query), ``query`` the last value of each parameter."""


class Probe(Protocol):
    """What the health server asks a service; each answer is (ok, a short reason)."""

    def alive(self) -> tuple[bool, str]: ...

    def ready(self) -> tuple[bool, str]: ...


class ServiceHealth:
    """Liveness and readiness a service loop publishes, for other threads to read.

    The loop calls :meth:`beat` on every turn and :meth:`set_ready` when its readiness
    changes; :meth:`alive` fails once no beat came for ``stall_after_s`` seconds, and a
    service that is not alive is not ready either.
    """

    def __init__(self, stall_after_s: float = STALL_AFTER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_after_s = stall_after_s
        self._clock = clock
        self._last_beat = clock()
        self._ready: tuple[bool, str] = (False, "starting")

    def beat(self) -> None:
        """The loop is turning."""
        self._last_beat = self._clock()

    def set_ready(self, ready: bool, reason: str) -> None:
        self._ready = (ready, reason)

    def alive(self) -> tuple[bool, str]:
        quiet = self._clock() - self._last_beat
        if quiet > self.stall_after_s:
            return False, (f"stalled: the service loop has not turned for {quiet:.0f} s "
                           f"(limit {self.stall_after_s:.0f} s)")
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        alive, reason = self.alive()
        return self._ready if alive else (False, reason)


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` served from a daemon thread.

    ``port=0`` binds a free port (see :attr:`port`). Use it as a context manager, or call
    :meth:`start` and :meth:`close`; closing stops the thread and releases the socket.
    """

    def __init__(self, probe: Probe, host: str = "127.0.0.1", port: int = 0,
                 registry: CollectorRegistry = REGISTRY,
                 routes: Mapping[str, Route] | None = None) -> None:
        self.probe = probe
        self.host = host
        self.requested_port = port
        self.registry = registry
        for prefix in routes or {}:
            if not (prefix.startswith("/") and prefix.endswith("/") and len(prefix) > 2) or \
                    any(p.startswith(prefix.rstrip("/")) for p in BUILT_IN):
                raise ValueError(f"route prefix {prefix!r}: give a path such as /v1/ that "
                                 f"is not one of {', '.join(BUILT_IN)}")
        self.routes = MappingProxyType(dict(routes or {}))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the health server is not started; call start()")
        return int(self._server.server_address[1])

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the socket is bound to, e.g. ``("127.0.0.1", 9108)``."""
        if self._server is None:
            raise RuntimeError("the health server is not started; call start()")
        host, port = self._server.socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9108`` (loopback when bound to every address)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self) -> HealthServer:
        if self._server is not None:
            return self
        try:
            server = _Server((self.host, self.requested_port), self)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"metrics port {self.requested_port} on {self.host} is already in use; "
                    "choose another with --metrics-port or CHAINWATCH_METRICS_PORT "
                    "(0 turns the metrics server off)") from None
            raise
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="chainwatch-health", daemon=True)
        self._thread.start()
        log.debug("metrics and health on %s (/metrics, /healthz, /readyz)", self.url)
        return self

    def close(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = self._thread = None

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def route_for(self, path: str) -> Route | None:
        """The route serving ``path`` (the longest prefix that matches), if any."""
        found = [p for p in self.routes if path.startswith(p) or path == p.rstrip("/")]
        return self.routes[max(found, key=len)] if found else None

    @property
    def paths(self) -> tuple[str, ...]:
        """What the server answers: the built-in paths, then the route prefixes."""
        return BUILT_IN + tuple(sorted(self.routes))


@contextlib.contextmanager
def health_server(settings: Settings, probe: Probe, routes: Mapping[str, Route] | None = None,
                  ) -> Iterator[HealthServer | None]:
    """The server of ``settings.metrics_port`` and ``metrics_host`` (with ``routes``) while
    the block runs; ``None`` when the port is 0 (off)."""
    if not settings.metrics_port:
        yield None
        return
    with HealthServer(probe, settings.metrics_host, settings.metrics_port,
                      routes=routes) as server:
        yield server


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], health: HealthServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.health = health
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host (slow without DNS)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    """One request per connection (HTTP/1.0), so closing the server leaves no thread behind
    on an idle keep-alive connection; a client that stalls is dropped after ``timeout``."""

    server: _Server
    timeout = 10

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        health = self.server.health
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._reply(200, encoder(health.registry), content_type)
        elif path == "/healthz":
            ok, reason = self._ask(health.probe.alive)
            self._reply(200 if ok else 503, f"{reason}\n".encode(), PLAIN)
        elif path == "/readyz":
            ok, reason = self._ask(health.probe.ready)
            text = f"ready: {reason}" if ok else f"not ready: {reason}"
            self._reply(200 if ok else 503, f"{text}\n".encode(), PLAIN)
        elif path == "/":
            self._reply(200, f"chainwatch: {' '.join(health.paths)}\n".encode(), PLAIN)
        elif (route := health.route_for(path)) is not None:
            reply = self._answer(route, path, dict(parse_qsl(query)))
            self._reply(reply.status, reply.body, reply.content_type)
        else:
            self._reply(404, f"not found; try {', '.join(health.paths)}\n".encode(), PLAIN)

    def do_HEAD(self) -> None:
        self.do_GET()

    @staticmethod
    def _ask(question: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
        try:
            return question()
        except Exception as exc:  # a probe's bug answers 503; it must not break the server
            log.exception("health probe failed")
            return False, f"probe failed: {type(exc).__name__}"

    @staticmethod
    def _answer(route: Route, path: str, query: Mapping[str, str]) -> Reply:
        try:
            return route(path, query)
        except Exception as exc:  # a route's bug answers 500; the server keeps serving
            log.exception("route %s failed", path)
            return Reply.error(500, f"internal error ({type(exc).__name__}); see the "
                               "service's log")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)
