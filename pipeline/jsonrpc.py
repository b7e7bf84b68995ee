"""Ethereum JSON-RPC for chainwatch: web3.py's providers (HTTP, and WebSocket on an event loop
of its own), batches, pacing to a rate, and retries with backoff; errors in one line, with no
URL path or query (where providers put API keys) ever shown.

Used by the live source (:mod:`producers.rpc`) and the audit log's anchors
(:mod:`pipeline.audit.anchor`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from web3 import AsyncWeb3, HTTPProvider, WebSocketProvider
from web3.types import RPCEndpoint

from pipeline.errors import SourceError

log = logging.getLogger(__name__)

RETRYABLE_RPC_CODES = {-32005, -32603, -32000, 429}  # limit exceeded, internal, server busy


class Counts(Protocol):
    """Where an :class:`Rpc` counts its requests and retries."""

    requests: int
    retries: int


class Tally:
    def __init__(self) -> None:
        self.requests = 0
        self.retries = 0


def shown_url(url: str) -> str:
    """``scheme://host[:port]``: a provider's API key lives in the path or the query, and a
    password in the netloc; neither is ever shown."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


class Transport(Protocol):
    def request(self, method: str, params: list[Any]) -> dict[str, Any]: ...

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class HttpTransport:
    """web3's HTTPProvider: one HTTP session, JSON-RPC batches in one POST."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.provider = HTTPProvider(url, request_kwargs={"timeout": timeout_s})

    def request(self, method: str, params: list[Any]) -> dict[str, Any]:
        return dict(self.provider.make_request(RPCEndpoint(method), params))

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        got = self.provider.make_batch_request([(RPCEndpoint(m), p) for m, p in calls])
        if isinstance(got, dict):  # the node refused the batch as a whole
            return [dict(got)] * len(calls)
        return _in_order(got, len(calls))

    def close(self) -> None:
        pass


class WebSocketTransport:
    """web3's WebSocketProvider (asyncio only) on an event loop of its own thread."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="chainwatch-rpc-websocket")
        self.thread.start()
        self.w3 = AsyncWeb3(WebSocketProvider(url))
        self._run(self.w3.provider.connect())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(self.timeout_s)

    def request(self, method: str, params: list[Any]) -> dict[str, Any]:
        return dict(self._run(self.w3.provider.make_request(RPCEndpoint(method), params)))

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        got = self._run(self.w3.provider.make_batch_request(
            [(RPCEndpoint(m), p) for m, p in calls]))
        if isinstance(got, dict):
            return [dict(got)] * len(calls)
        return _in_order(got, len(calls))

    def close(self) -> None:
        try:
            self._run(self.w3.provider.disconnect())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


def _in_order(responses: Iterable[Any], n: int) -> list[dict[str, Any]]:
    """A batch's responses by request id (web3 numbers a batch's requests in order)."""
    got = [dict(r) for r in responses]
    ids = [r.get("id") for r in got]
    numbers = [i for i in ids if isinstance(i, int)]
    if len(numbers) == len(got) == n:
        first = min(numbers)
        ordered: list[dict[str, Any] | None] = [None] * n
        for r in got:
            index = r["id"] - first
            if 0 <= index < n:
                ordered[index] = r
        if all(r is not None for r in ordered):
            return [r for r in ordered if r is not None]
    if len(got) != n:
        raise SourceError(f"the node answered a batch of {n} requests with {len(got)} answers")
    return got


def connect(url: str) -> Transport:
    scheme = urlsplit(url).scheme
    if scheme in ("http", "https"):
        return HttpTransport(url)
    if scheme in ("ws", "wss"):
        return WebSocketTransport(url)
    raise SourceError(f"--rpc-url {shown_url(url)}: give an http://, https://, ws:// or wss:// "
                      "URL")


class _RetryableError(Exception):
    pass


class Rpc:
    """JSON-RPC calls paced to ``rate`` per second and retried with backoff."""

    def __init__(self, transport: Transport, shown: str, *, rate: float, max_retries: int,
                 summary: Counts, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.transport = transport
        self.shown = shown
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.max_retries = max_retries
        self.summary = summary
        self.sleep = sleep
        self.clock = clock
        self._next = clock()
        self.has_block_receipts = True

    def _pace(self, n: int) -> None:
        now = self.clock()
        if self._next > now:
            self.sleep(self._next - now)
        self._next = max(now, self._next) + n * self.interval

    def call(self, method: str, *params: Any) -> Any:
        return self.batch([(method, list(params))])[0]

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """Each call's result (a JSON-RPC error that is not worth retrying raises)."""
        if not calls:
            return []
        delay = 0.5
        for attempt in range(self.max_retries + 1):
            self._pace(len(calls))
            self.summary.requests += len(calls)
            try:
                answers = (self.transport.batch(calls) if len(calls) > 1
                           else [self.transport.request(*calls[0])])
                return [self._result(a, c) for a, c in zip(answers, calls, strict=True)]
            except (_RetryableError, OSError, TimeoutError) as exc:
                why = _scrub(str(exc)) or type(exc).__name__
            except Exception as exc:  # requests' and websockets' errors, by what they say
                if not _transient(exc):
                    raise SourceError(f"the node at {self.shown} failed: "
                                      f"{type(exc).__name__}: {_scrub(str(exc))}") from None
                why = f"{type(exc).__name__}: {_scrub(str(exc))}"
            if attempt == self.max_retries:
                raise SourceError(f"the node at {self.shown} still fails after "
                                  f"{self.max_retries} retries ({why}); check it, or lower "
                                  "--rate")
            self.summary.retries += 1
            log.warning("rpc: %s; retrying in %.1f s", why, delay)
            self.sleep(delay)
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    @staticmethod
    def _result(answer: dict[str, Any], call: tuple[str, list[Any]]) -> Any:
        error = answer.get("error")
        if error is None:
            return answer.get("result")
        code = error.get("code") if isinstance(error, dict) else None
        message = str(error.get("message") if isinstance(error, dict) else error)
        if code in RETRYABLE_RPC_CODES or "rate" in message.lower() or \
                "limit" in message.lower():
            raise _RetryableError(f"{call[0]}: {message} ({code})")
        raise RpcError(call[0], code, message)


class RpcError(Exception):
    def __init__(self, method: str, code: Any, message: str) -> None:
        super().__init__(f"{method}: {message} ({code})")
        self.method = method
        self.code = code


def rpc_client(url: str, rate: float = 20.0, max_retries: int = 4) -> Rpc:
    """An :class:`Rpc` on the node at ``url`` (close it with ``rpc.transport.close()``)."""
    return Rpc(connect(url), shown_url(url), rate=rate, max_retries=max_retries,
               summary=Tally())


def _transient(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    if isinstance(exc, RpcError):
        return False
    return any(word in text for word in ("timeout", "timed out", "connection", "429", "502",
                                         "503", "504", "500", "too many", "reset",
                                         "closed", "unavailable"))


def _scrub(text: str) -> str:
    """An error message without URLs or their paths (a provider's key may be in either)."""
    text = re.sub(r"url: \S+", "url: <hidden>", text)
    return " ".join("<url>" if "://" in w else w for w in text.split())[:300]


